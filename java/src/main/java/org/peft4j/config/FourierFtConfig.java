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
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, FourierFtConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected FourierFtConfig create(Map<String, Object> fields) {
            return new FourierFtConfig(fields);
        }

        /** {@code n_frequency}: the number of learned frequencies per layer (default 1000). */
        public Builder nFrequency(int nFrequency) {
            return setPositive("n_frequency", nFrequency);
        }

        /** {@code scaling}: the scale of ΔW (default 150). */
        public Builder scaling(double scaling) {
            return set("scaling", scaling);
        }

        /** {@code random_loc_seed}: the seed of the frequency locations (default 777). */
        public Builder randomLocSeed(int randomLocSeed) {
            return set("random_loc_seed", randomLocSeed);
        }

        /** {@code n_frequency_pattern}: per-module n_frequency. */
        public Builder nFrequencyPattern(Map<String, Integer> nFrequencyPattern) {
            return setPattern("n_frequency_pattern", nFrequencyPattern);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: false (the default): coefficients ~ N(0, 1); true: zero (identity). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
