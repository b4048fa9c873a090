package org.peft4j.config;

import java.util.Map;

/**
 * LoKr (low-rank Kronecker product, LyCORIS): ΔW = W1 ⊗ (B·A) · alpha / r. PEFT's field names ({@code peft_type}
 * LOKR); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class LoKrConfig extends TunerConfig {
    private LoKrConfig(Map<String, Object> fields) {
        super("LOKR", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LoKrConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends LycorisBuilder<Builder, LoKrConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LoKrConfig create(Map<String, Object> fields) {
            return new LoKrConfig(fields);
        }

        /** {@code r}: the rank of the low-rank factor (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code rank_dropout_scale}: rescale by the kept fraction under rank dropout (default false). */
        public Builder rankDropoutScale(boolean rankDropoutScale) {
            return set("rank_dropout_scale", rankDropoutScale);
        }

        /** {@code decompose_both}: factor the left Kronecker matrix into low rank too (default false). */
        public Builder decomposeBoth(boolean decomposeBoth) {
            return set("decompose_both", decomposeBoth);
        }

        /** {@code decompose_factor}: the factor the dimensions are split by, -1 for the most balanced split (default -1). */
        public Builder decomposeFactor(int decomposeFactor) {
            return set("decompose_factor", decomposeFactor);
        }

        /** {@code init_weights}: true (the default): the right factor starts at zero (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
