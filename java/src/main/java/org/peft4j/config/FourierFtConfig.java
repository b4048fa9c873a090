package org.peft4j.config;

import java.util.Map;

/**
 * FourierFT: trainable spectral coefficients at fixed random frequencies; ΔW is their inverse 2-D DFT. PEFT's
 * field names ({@code peft_type} FOURIERFT); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class FourierFtConfig extends TunerConfig {
    private FourierFtConfig(Map<String, Object> fields) {
        super("FOURIERFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link FourierFtConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends SpectralBuilder<Builder, FourierFtConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected FourierFtConfig create(Map<String, Object> fields) {
            return new FourierFtConfig(fields);
        }

        /** {@code init_weights}: false (the default): coefficients ~ N(0, 1); true: zero (identity). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
