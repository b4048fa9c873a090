package org.peft4j.config;

import java.util.Map;

/**
 * SHiRA: a sparse high-rank update on a fixed random mask of the weight's entries. PEFT's field names ({@code
 * peft_type} SHIRA); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads
 * in PEFT.
 */
public final class ShiraConfig extends TunerConfig {
    private ShiraConfig(Map<String, Object> fields) {
        super("SHIRA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link ShiraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, ShiraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected ShiraConfig create(Map<String, Object> fields) {
            return new ShiraConfig(fields);
        }

        /** {@code r}: sets the number of trainable entries, r·(in + out) per layer (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code random_seed}: the seed of the random mask. */
        public Builder randomSeed(int randomSeed) {
            return set("random_seed", randomSeed);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code init_weights}: true (the default): the sparse values start at zero (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }
    }
}
