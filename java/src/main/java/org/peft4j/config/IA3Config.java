package org.peft4j.config;

import java.util.Map;

/**
 * (IA)³: learned vectors that rescale the keys, values and feed-forward activations. PEFT's field names ({@code
 * peft_type} IA3); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads
 * in PEFT.
 */
public final class IA3Config extends TunerConfig {
    private IA3Config(Map<String, Object> fields) {
        super("IA3", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link IA3Config}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, IA3Config> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected IA3Config create(Map<String, Object> fields) {
            return new IA3Config(fields);
        }

        /** {@code feedforward_modules}: target modules whose input (rather than output) is rescaled; must be among the targets. */
        public Builder feedforwardModules(String... feedforwardModules) {
            return setNames("feedforward_modules", feedforwardModules);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code init_ia3_weights}: true (the default): the vectors start at one (identity); false: random. */
        public Builder initIa3Weights(boolean initIa3Weights) {
            return set("init_ia3_weights", initIa3Weights);
        }

        /** {@code exclude_modules}: names never adapted. */
        public Builder excludeModules(String... excludeModules) {
            return setNames("exclude_modules", excludeModules);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }
    }
}
