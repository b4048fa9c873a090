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
    public static final class Builder extends SpectralBuilder<Builder, WaveFtConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected WaveFtConfig create(Map<String, Object> fields) {
            return new WaveFtConfig(fields);
        }

        /** {@code wavelet_family}: "db1" (the default) to "db10", "sym2" to "sym10", "coif1" to "coif4". */
        public Builder waveletFamily(String waveletFamily) {
            return set("wavelet_family", waveletFamily);
        }

        /** {@code use_idwt}: true (the default): ΔW is the inverse DWT; false: the coefficients as a sparse ΔW. */
        public Builder useIdwt(boolean useIdwt) {
            return set("use_idwt", useIdwt);
        }

        /** {@code proportional_parameters}: share n_frequency × targets out by each target's size. */
        public Builder proportionalParameters(boolean proportionalParameters) {
            return set("proportional_parameters", proportionalParameters);
        }

        /** {@code init_weights}: true (the default): zero coefficients, the identity; false: N(0, 0.01²). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
