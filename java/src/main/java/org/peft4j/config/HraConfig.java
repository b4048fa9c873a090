package org.peft4j.config;

import java.util.Map;

/**
 * HRA: a chain of r Householder reflections multiplies the frozen weight. PEFT's field names ({@code peft_type}
 * HRA); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class HraConfig extends TunerConfig {
    private HraConfig(Map<String, Object> fields) {
        super("HRA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link HraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, HraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected HraConfig create(Map<String, Object> fields) {
            return new HraConfig(fields);
        }

        /** {@code r}: the number of reflections (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code apply_GS}: Gram-Schmidt-orthogonalise the reflection vectors (default false). */
        public Builder applyGS(boolean applyGS) {
            return set("apply_GS", applyGS);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): reflections in pairs that cancel (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
