package org.peft4j.config;

import java.util.Map;

/**
 * AdaMSS: the base weight's top-r SVD, its output space clustered into subspaces, and per subspace a trained low-rank
 * pair (A_i, B_i) acting on the frozen right singular vectors; ASA optionally prunes subspaces during training. PEFT's
 * field names ({@code peft_type} ADAMSS); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class AdamssConfig extends TunerConfig {
    private AdamssConfig(Map<String, Object> fields) {
        super("ADAMSS", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds an {@link AdamssConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, AdamssConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected AdamssConfig create(Map<String, Object> fields) {
            return new AdamssConfig(fields);
        }

        /** {@code r}: the SVD rank, clamped to the layer's size (default 100). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code num_subspaces}: the number of K-means subspaces (default 5). */
        public Builder numSubspaces(int numSubspaces) {
            return setPositive("num_subspaces", numSubspaces);
        }

        /** {@code subspace_rank}: the rank of each subspace's update (default 1). */
        public Builder subspaceRank(int subspaceRank) {
            return setPositive("subspace_rank", subspaceRank);
        }

        /** {@code init_weights}: true: "orthogonal" (the default, B = 0: identity); false: None (B random). */
        public Builder initWeights(boolean orthogonal) {
            return set("init_weights", orthogonal ? "orthogonal" : Boolean.FALSE);
        }

        /** {@code use_asa}: adaptive subspace allocation, pruning subspaces while training (default false). */
        public Builder useAsa(boolean useAsa) {
            return set("use_asa", useAsa);
        }

        /** {@code asa_target_subspaces}: the number of subspaces ASA keeps (default 50). */
        public Builder asaTargetSubspaces(int asaTargetSubspaces) {
            return set("asa_target_subspaces", asaTargetSubspaces);
        }

        /** {@code init_warmup}: the step ASA starts at (default 50). */
        public Builder initWarmup(int initWarmup) {
            return set("init_warmup", initWarmup);
        }

        /** {@code final_warmup}: the step ASA reaches its target at (default 1000). */
        public Builder finalWarmup(int finalWarmup) {
            return set("final_warmup", finalWarmup);
        }

        /** {@code mask_interval}: steps between ASA's masking (default 100). */
        public Builder maskInterval(int maskInterval) {
            return set("mask_interval", maskInterval);
        }

        /** {@code asa_importance_beta}: EMA coefficient of the importance (default 0.85). */
        public Builder asaImportanceBeta(double asaImportanceBeta) {
            return set("asa_importance_beta", asaImportanceBeta);
        }

        /** {@code asa_uncertainty_beta}: EMA coefficient of the uncertainty (default 0.85). */
        public Builder asaUncertaintyBeta(double asaUncertaintyBeta) {
            return set("asa_uncertainty_beta", asaUncertaintyBeta);
        }

        /** {@code asa_schedule_exponent}: how fast ASA's target falls (default 3). */
        public Builder asaScheduleExponent(double asaScheduleExponent) {
            return set("asa_schedule_exponent", asaScheduleExponent);
        }

        /** {@code use_dynamic_rank}: each subspace's rank from its singular values (default false). */
        public Builder useDynamicRank(boolean useDynamicRank) {
            return set("use_dynamic_rank", useDynamicRank);
        }

        /** {@code svd_threshold}: the singular-value ratio of dynamic ranks (default 0.1). */
        public Builder svdThreshold(double svdThreshold) {
            return set("svd_threshold", svdThreshold);
        }

        /** {@code random_seed}: the seed of the randomized SVD (default 0). */
        public Builder randomSeed(int randomSeed) {
            return set("random_seed", randomSeed);
        }
    }
}
