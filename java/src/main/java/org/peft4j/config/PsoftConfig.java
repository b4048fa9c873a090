package org.peft4j.config;

import java.util.Map;

/**
 * PSOFT: frozen A and B from the base weight's top-r SVD and a trained r x r (orthogonal, optionally scaled) R between
 * them, delta W = (alpha / r) B (R - I) A. PEFT's field names ({@code peft_type} PSOFT); unset fields take PEFT's
 * defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class PsoftConfig extends TunerConfig {
    private PsoftConfig(Map<String, Object> fields) {
        super("PSOFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PsoftConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, PsoftConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PsoftConfig create(Map<String, Object> fields) {
            return new PsoftConfig(fields);
        }

        /** {@code r}: the size of R, at most min(in, out) of every target (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code psoft_alpha}: the scaling numerator, scaling = psoft_alpha / r (default 32). */
        public Builder psoftAlpha(int psoftAlpha) {
            return set("psoft_alpha", psoftAlpha);
        }

        /** {@code psoft_dropout}: dropout on the adapter input in training (default 0). */
        public Builder psoftDropout(double psoftDropout) {
            return setProbability("psoft_dropout", psoftDropout);
        }

        /** {@code ab_svd_init}: "psoft_init" (row-orthogonal A, the default) or "pissa_init" (symmetric A, B). */
        public Builder abSvdInit(String abSvdInit) {
            return set("ab_svd_init", abSvdInit);
        }

        /** {@code psoft_svd}: "full" (torch.linalg.svd, the default) or "lowrank" (torch.svd_lowrank). */
        public Builder psoftSvd(String psoftSvd) {
            return set("psoft_svd", psoftSvd);
        }

        /** {@code psoft_svd_lowrank_niter}: power iterations of the lowrank SVD (default 10). */
        public Builder psoftSvdLowrankNiter(int psoftSvdLowrankNiter) {
            return set("psoft_svd_lowrank_niter", psoftSvdLowrankNiter);
        }

        /** {@code random_seed}: the seed of the lowrank SVD (default 0). */
        public Builder randomSeed(int randomSeed) {
            return set("random_seed", randomSeed);
        }

        /** {@code psoft_orth}: R orthogonal through the Cayley transform (default true); false: a free matrix. */
        public Builder psoftOrth(boolean psoftOrth) {
            return set("psoft_orth", psoftOrth);
        }

        /** {@code psoft_mag_b}: a trained scaling vector on R's output side (default true). */
        public Builder psoftMagB(boolean psoftMagB) {
            return set("psoft_mag_b", psoftMagB);
        }

        /** {@code psoft_mag_a}: a trained scaling vector on R's input side (default true). */
        public Builder psoftMagA(boolean psoftMagA) {
            return set("psoft_mag_a", psoftMagA);
        }

        /** {@code use_cayley_neumann}: the Neumann-series Cayley transform (default false: exact). */
        public Builder useCayleyNeumann(boolean useCayleyNeumann) {
            return set("use_cayley_neumann", useCayleyNeumann);
        }

        /** {@code num_cayley_neumann_terms}: terms of the Neumann series (default 5). */
        public Builder numCayleyNeumannTerms(int numCayleyNeumannTerms) {
            return setPositive("num_cayley_neumann_terms", numCayleyNeumannTerms);
        }

        /** {@code cayley_neumann_eps}: the Frobenius bound Q is rescaled to, in (0, 1) (default: none). */
        public Builder cayleyNeumannEps(double cayleyNeumannEps) {
            return set("cayley_neumann_eps", cayleyNeumannEps);
        }

        /** {@code init_weights}: true (the default): R = I (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
