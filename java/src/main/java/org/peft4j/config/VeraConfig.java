package org.peft4j.config;

import java.util.Map;

/**
 * VeRA: shared frozen random projections A and B, and trainable scaling vectors d and b per layer. PEFT's field
 * names ({@code peft_type} VERA); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class VeraConfig extends TunerConfig {
    private VeraConfig(Map<String, Object> fields) {
        super("VERA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link VeraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends VeraBuilder<Builder, VeraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected VeraConfig create(Map<String, Object> fields) {
            return new VeraConfig(fields);
        }

        /** {@code vera_dropout}: dropout on the adapter input in training (default 0). */
        public Builder veraDropout(double veraDropout) {
            return setProbability("vera_dropout", veraDropout);
        }
    }
}
