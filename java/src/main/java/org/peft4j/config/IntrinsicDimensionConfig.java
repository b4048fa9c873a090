package org.peft4j.config;

import java.util.Map;

/**
 * Intrinsic dimension ({@code peft_type} INTRINSIC_DIMENSION, a peft4j method): every parameter of the targeted modules
 * moves in one random d-dimensional subspace, θ = θ₀ + P(θ^d) (DID), or with one trained scale per parameter tensor
 * (SAID, the default); exactly d numbers train. The saved adapter holds θ^d, the scales and, in the config, the
 * projection's seed. See docs/methods.md.
 */
public final class IntrinsicDimensionConfig extends TunerConfig {
    private IntrinsicDimensionConfig(Map<String, Object> fields) {
        super("INTRINSIC_DIMENSION", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds an {@link IntrinsicDimensionConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, IntrinsicDimensionConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected IntrinsicDimensionConfig create(Map<String, Object> fields) {
            return new IntrinsicDimensionConfig(fields);
        }

        /** {@code intrinsic_dimension}: d, the number of trainable values (default 20000). */
        public Builder intrinsicDimension(int d) {
            return setPositive("intrinsic_dimension", d);
        }

        /** {@code said}: one trained scale per parameter tensor (true, the default) or plain DID (false). */
        public Builder said(boolean said) {
            return set("said", said);
        }

        /** {@code projection}: "fastfood" (the default), "dense" or "sparse". */
        public Builder projection(String projection) {
            return set("projection", projection);
        }

        /** {@code projection_prng_key}: the seed the projections are generated from (default 0). */
        public Builder projectionPrngKey(long key) {
            return set("projection_prng_key", key);
        }
    }
}
