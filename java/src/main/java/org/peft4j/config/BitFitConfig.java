package org.peft4j.config;

import java.util.Map;

/**
 * BitFit ({@code peft_type} BITFIT, a peft4j method): only the bias terms train (plus a sequence classifier's head);
 * the adapter saves exactly those tensors under the model's own names. Without target modules every module with a
 * bias is tuned. See docs/methods.md.
 */
public final class BitFitConfig extends TunerConfig {
    private BitFitConfig(Map<String, Object> fields) {
        super("BITFIT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link BitFitConfig}. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, BitFitConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected BitFitConfig create(Map<String, Object> fields) {
            return new BitFitConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code modules_to_save}: modules trained in full (default for classifiers: "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
