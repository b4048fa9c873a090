package org.peft4j.config;

import java.util.Map;

/**
 * PST ({@code peft_type} PST, a peft4j method): parameter-efficient sparsity training — the targeted weights are pruned
 * on a cubic schedule while a low-rank update trains, the mask chosen by scores from low-rank and row/column terms.
 * The saved adapter holds the sparse weights. Field names as the authors' code has them. See docs/methods.md.
 */
public final class PstConfig extends TunerConfig {
    private PstConfig(Map<String, Object> fields) {
        super("PST", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PstConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, PstConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PstConfig create(Map<String, Object> fields) {
            return new PstConfig(fields);
        }

        /** {@code weight_rank}: r₁, the rank of the weight update U·V (default 8). */
        public Builder weightRank(int rank) {
            return setPositive("weight_rank", rank);
        }

        /** {@code mask_rank}: r₂, the rank of the score term A·B (default 8). */
        public Builder maskRank(int rank) {
            return setPositive("mask_rank", rank);
        }

        /** {@code weight_beta}: the scale of U·V (default 1). */
        public Builder weightBeta(double beta) {
            return set("weight_beta", beta);
        }

        /** {@code mask_alpha1}: the scale of A·B in the scores (default 1). */
        public Builder maskAlpha1(double alpha) {
            return set("mask_alpha1", alpha);
        }

        /** {@code mask_alpha2}: the scale of the row and column terms R, C in the scores (default 1). */
        public Builder maskAlpha2(double alpha) {
            return set("mask_alpha2", alpha);
        }

        /** {@code sparsity}: the final fraction of pruned entries (default 0.9). */
        public Builder sparsity(double sparsity) {
            return setProbability("sparsity", sparsity);
        }

        /** {@code initial_sparsity}: the fraction pruned during the warmup (default 0). */
        public Builder initialSparsity(double sparsity) {
            return setProbability("initial_sparsity", sparsity);
        }

        /** {@code initial_warmup}: the fraction of the steps before pruning starts (default 0.1). */
        public Builder initialWarmup(double fraction) {
            return set("initial_warmup", fraction);
        }

        /** {@code final_warmup}: the fraction of the steps at the final sparsity (default 0.3). */
        public Builder finalWarmup(double fraction) {
            return set("final_warmup", fraction);
        }

        /** {@code total_step}: the schedule's length (default: the trainer's number of steps). */
        public Builder totalStep(int steps) {
            return setPositive("total_step", steps);
        }
    }
}
