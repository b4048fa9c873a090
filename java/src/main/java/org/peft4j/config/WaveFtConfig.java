package org.peft4j.config;

import java.util.Map;

/**
 * WaveFT: trainable wavelet coefficients at seeded random positions; ΔW is their inverse 2-D wavelet transform. PEFT's
 * field names ({@code peft_type} WAVEFT); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class WaveFtConfig extends TunerConfig {
    private WaveFtConfig(Map<String, Object> fields) {
        super("WAVEFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link WaveFtConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, WaveFtConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected WaveFtConfig create(Map<String, Object> fields) {
            return new WaveFtConfig(fields);
        }

        /** {@code n_frequency}: the number of learned coefficients per layer (default 2592). */
        public Builder nFrequency(int nFrequency) {
            return setPositive("n_frequency", nFrequency);
        }

        /** {@code scaling}: the factor on ΔW (default 25). */
        public Builder scaling(double scaling) {
            return set("scaling", scaling);
        }

        /** {@code wavelet_family}: "db1" (the default) to "db10", "sym2" to "sym10", "coif1" to "coif4". */
        public Builder waveletFamily(String waveletFamily) {
            return set("wavelet_family", waveletFamily);
        }

        /** {@code use_idwt}: true (the default): ΔW is the inverse DWT; false: the coefficients as a sparse ΔW. */
        public Builder useIdwt(boolean useIdwt) {
            return set("use_idwt", useIdwt);
        }

        /** {@code random_loc_seed}: the seed of the coefficients' positions (default 777). */
        public Builder randomLocSeed(int randomLocSeed) {
            return set("random_loc_seed", randomLocSeed);
        }

        /** {@code n_frequency_pattern}: per-module n_frequency. */
        public Builder nFrequencyPattern(Map<String, Integer> nFrequencyPattern) {
            return setPattern("n_frequency_pattern", nFrequencyPattern);
        }

        /** {@code proportional_parameters}: share n_frequency × targets out by each target's size. */
        public Builder proportionalParameters(boolean proportionalParameters) {
            return set("proportional_parameters", proportionalParameters);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): zero coefficients, the identity; false: N(0, 0.01²). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
