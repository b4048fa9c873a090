package org.peft4j.config;

import java.util.Map;

/**
 * The multi-head parallel adapter of He et al. (ICLR 2022) ({@code peft_type} MH_PARALLEL_ADAPTER, a peft4j method
 * HF PEFT and AdapterHub lack): in every self-attention layer, for each head i, {@code Δh_i = s · (f(x·W_down^(i) +
 * b_down^(i))·W_up^(i) + b_up^(i))} is added to head i's output before the output projection, x being the attention
 * input. The fields carry AdapterHub's bottleneck names; unset fields take the core's defaults (bottleneck width 8
 * per head, ReLU, scaling 1, identity initialisation). The adapted layers follow from the model, so no
 * {@code target_modules} is needed. See docs/methods.md for placements, parameter counts and saved keys.
 *
 * <pre>{@code
 * MultiHeadParallelAdapterConfig config = MultiHeadParallelAdapterConfig.builder()
 *         .bottleneckSize(16).learnedScaling().leaveOut(0).build();
 * }</pre>
 */
public final class MultiHeadParallelAdapterConfig extends TunerConfig {
    private MultiHeadParallelAdapterConfig(Map<String, Object> fields) {
        super("MH_PARALLEL_ADAPTER", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link MultiHeadParallelAdapterConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.Builder<Builder, MultiHeadParallelAdapterConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected MultiHeadParallelAdapterConfig create(Map<String, Object> fields) {
            return new MultiHeadParallelAdapterConfig(fields);
        }

        /** {@code bottleneck_size}: the bottleneck width r of each head (default 8). */
        public Builder bottleneckSize(int size) {
            return setPositive("bottleneck_size", size);
        }

        /** {@code non_linearity}: a transformers activation name ("relu", the default, "swish", "gelu", ...). */
        public Builder nonLinearity(String name) {
            return set("non_linearity", name);
        }

        /** {@code scaling}: a fixed factor s on Δh (default 1). */
        public Builder scaling(double s) {
            return set("scaling", s);
        }

        /** {@code scaling = "learned"}: one trainable scalar s per layer, starting at 1. */
        public Builder learnedScaling() {
            return set("scaling", "learned");
        }

        /** {@code init_weights}: "mam_adapter" (identity, default) or "bert" (N(0, 0.02) weights). */
        public Builder initWeights(String how) {
            return set("init_weights", how);
        }

        /** {@code dropout} on Δh in training. */
        public Builder dropout(double p) {
            return setProbability("dropout", p);
        }

        /** {@code leave_out}: layer indices without adapter. */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
