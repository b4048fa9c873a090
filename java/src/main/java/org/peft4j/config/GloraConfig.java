package org.peft4j.config;

import java.util.Map;

/**
 * GLoRA: five trained paths per Linear layer, W' = W + W * A + B and b' = b + b * D + E + W C, each path low-rank
 * ("lora"), a vector, a constant or none. PEFT's field names ({@code peft_type} GLORA); unset fields take PEFT's
 * defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class GloraConfig extends TunerConfig {
    private GloraConfig(Map<String, Object> fields) {
        super("GLORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link GloraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, GloraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected GloraConfig create(Map<String, Object> fields) {
            return new GloraConfig(fields);
        }

        /** {@code r}: the rank of the "lora" paths (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code config_A_B}: the A and B paths, "lora" (default), "vector", "constant" or "none". */
        public Builder configAB(String configAB) {
            return set("config_A_B", configAB);
        }

        /** {@code config_C}: the C path, "lora" (default), "vector" or "none". */
        public Builder configC(String configC) {
            return set("config_C", configC);
        }

        /** {@code config_D_E}: the D and E paths, "vector", "constant" (default) or "none". */
        public Builder configDE(String configDE) {
            return set("config_D_E", configDE);
        }

        /** {@code init_weights}: true (the default): every path starts at zero (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
