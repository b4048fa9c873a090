package org.peft4j.config;

import java.util.Map;

/**
 * Diff pruning ({@code peft_type} DIFF_PRUNING, a peft4j method): a task difference θ₀ + z ⊙ w over every parameter of
 * the targeted modules, made sparse by hard-concrete gates with an L0 penalty and a magnitude projection to {@code
 * fixmask_pct}, then fine-tuned on that support. The saved adapter holds the sparse difference (indices and values).
 * See docs/methods.md.
 */
public final class DiffPruningConfig extends TunerConfig {
    private DiffPruningConfig(Map<String, Object> fields) {
        super("DIFF_PRUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link DiffPruningConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, DiffPruningConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected DiffPruningConfig create(Map<String, Object> fields) {
            return new DiffPruningConfig(fields);
        }

        /** {@code alpha_init}: the gates' initial log-alpha (default 5). */
        public Builder alphaInit(double alpha) {
            return set("alpha_init", alpha);
        }

        /** {@code concrete_lower}: the gates' stretch l (default -1.5). */
        public Builder concreteLower(double lower) {
            return set("concrete_lower", lower);
        }

        /** {@code concrete_upper}: the gates' stretch r (default 1.5). */
        public Builder concreteUpper(double upper) {
            return set("concrete_upper", upper);
        }

        /** {@code structured_diff_pruning}: one more gate per parameter tensor (default true). */
        public Builder structuredDiffPruning(boolean structured) {
            return set("structured_diff_pruning", structured);
        }

        /** {@code sparsity_pen}: λ, the weight of the expected L0 norm in the loss (default 1.25e-7). */
        public Builder sparsityPen(double penalty) {
            return set("sparsity_pen", penalty);
        }

        /** {@code learning_rate_alpha}: the gates' own learning rate (default 0.1). */
        public Builder learningRateAlpha(double rate) {
            return set("learning_rate_alpha", rate);
        }

        /** {@code fixmask_pct}: the density the projection keeps (default 0.005). */
        public Builder fixmaskPct(double density) {
            return set("fixmask_pct", density);
        }

        /** {@code fixmask_steps}: the steps trained on the fixed support after the projection (default: half). */
        public Builder fixmaskSteps(int steps) {
            return set("fixmask_steps", steps);
        }

        /** {@code total_step}: the run's length (default: the trainer's number of steps). */
        public Builder totalStep(int steps) {
            return setPositive("total_step", steps);
        }
    }
}
