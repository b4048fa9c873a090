package org.peft4j.config;

import java.util.Map;

/**
 * BEFT: one trained bias vector per adapted Linear layer, added to its output (merging adds it to the layer's bias).
 * PEFT's field names ({@code peft_type} BEFT); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class BeftConfig extends TunerConfig {
    private BeftConfig(Map<String, Object> fields) {
        super("BEFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link BeftConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, BeftConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected BeftConfig create(Map<String, Object> fields) {
            return new BeftConfig(fields);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }

        /** {@code init_weights}: true (the default): zero vectors, the identity; false: N(0, 1) vectors. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
