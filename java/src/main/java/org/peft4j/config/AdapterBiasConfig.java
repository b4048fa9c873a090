package org.peft4j.config;

import java.util.Map;

/**
 * AdapterBias ({@code peft_type} ADAPTER_BIAS, a peft4j method): a token-dependent shift {@code (h·α)·v} added to
 * every layer's FFN output, two vectors of the hidden size per layer. See docs/methods.md.
 */
public final class AdapterBiasConfig extends TunerConfig {
    private AdapterBiasConfig(Map<String, Object> fields) {
        super("ADAPTER_BIAS", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds an {@link AdapterBiasConfig}. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, AdapterBiasConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected AdapterBiasConfig create(Map<String, Object> fields) {
            return new AdapterBiasConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code leave_out}: layers that get no shift. */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }

        /** {@code init_weights}: true starts v at zero (the identity, default). */
        public Builder initWeights(boolean identity) {
            return set("init_weights", identity);
        }
    }
}
