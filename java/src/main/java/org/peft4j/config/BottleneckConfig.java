package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * Bottleneck adapters ({@code peft_type} BOTTLENECK, a peft4j method HF PEFT lacks) with AdapterHub's field names:
 * {@code Δh = s · up(f(down(z)))} after the attention and/or the FFN of every layer, sequential or parallel. The
 * presets are AdapterHub's architectures; each setter overrides one field. Targets follow from the placement, so no
 * {@code target_modules} is needed. See docs/methods.md for formulas, placements and parameter counts.
 *
 * <pre>{@code
 * BottleneckConfig config = BottleneckConfig.houlsby().reductionFactor(8).leaveOut(0, 1).build();
 * }</pre>
 */
public final class BottleneckConfig extends TunerConfig {
    private BottleneckConfig(Map<String, Object> fields) {
        super("BOTTLENECK", fields);
    }

    /** No preset: the core's defaults (after the FFN, reduction 16, ReLU, identity init). */
    public static Builder builder() {
        return new Builder();
    }

    /** Houlsby et al.: sequential adapters after the attention and after the FFN, reduction 16, swish. */
    public static Builder houlsby() {
        return builder().mhAdapter(true).outputAdapter(true).reductionFactor(16).nonLinearity("swish");
    }

    /**
     * Pfeiffer et al.: one sequential adapter after the FFN, reduction 16, ReLU. AdapterHub's preset also reads
     * LN(h + residual) on post-LN models; call {@link Builder#originalLnBefore(boolean)} with true for that on BERT.
     */
    public static Builder pfeiffer() {
        return builder().mhAdapter(false).outputAdapter(true).reductionFactor(16).nonLinearity("relu");
    }

    /** He et al.'s parallel adapter at the FFN: reads the FFN input, scaling 4, reduction 2, ReLU. */
    public static Builder parallel() {
        return builder().mhAdapter(false).outputAdapter(true).reductionFactor(2).nonLinearity("relu")
                .isParallel(true).scaling(4.0);
    }

    /** The parallel adapter with a learned scalar scaling. */
    public static Builder scaledParallel() {
        return parallel().learnedScaling();
    }

    /** Builds a {@link BottleneckConfig}; each setter maps to the AdapterHub field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, BottleneckConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected BottleneckConfig create(Map<String, Object> fields) {
            return new BottleneckConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code mh_adapter}: an adapter after the attention. */
        public Builder mhAdapter(boolean on) {
            return set("mh_adapter", on);
        }

        /** {@code output_adapter}: an adapter after the FFN. */
        public Builder outputAdapter(boolean on) {
            return set("output_adapter", on);
        }

        /** {@code reduction_factor}: bottleneck width = hidden size / factor. */
        public Builder reductionFactor(double factor) {
            if (!(factor > 0)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "reduction_factor must be positive, got " + factor);
            }
            return set("reduction_factor", factor);
        }

        /** {@code bottleneck_size}: the bottleneck width itself (instead of reduction_factor). */
        public Builder bottleneckSize(int size) {
            return setPositive("bottleneck_size", size);
        }

        /** {@code non_linearity}: a transformers activation name ("relu", "swish", "gelu", ...). */
        public Builder nonLinearity(String name) {
            return set("non_linearity", name);
        }

        /** {@code is_parallel}: read the FFN's input and add to its output (He et al.). */
        public Builder isParallel(boolean on) {
            return set("is_parallel", on);
        }

        /** {@code scaling}: a fixed factor s on Δh. */
        public Builder scaling(double s) {
            return set("scaling", s);
        }

        /** {@code scaling = "learned"}: one trainable scalar s (the scaled parallel adapter). */
        public Builder learnedScaling() {
            return set("scaling", "learned");
        }

        /** {@code original_ln_before}: on BERT, the adapter reads LN(h + residual) and the block re-normalises. */
        public Builder originalLnBefore(boolean on) {
            return set("original_ln_before", on);
        }

        /** {@code init_weights}: "mam_adapter" (identity, default), "bert" or "houlsby". */
        public Builder initWeights(String how) {
            return set("init_weights", how);
        }

        /**
         * {@code use_gating}: Δh times the sequence mean of sigmoid(gate(z)), a trained Linear(d, 1) per adapter (UniPELT's
         * gate); a gated adapter runs without KV cache.
         */
        public Builder useGating(boolean on) {
            return set("use_gating", on);
        }

        /** {@code dropout} on Δh in training. */
        public Builder dropout(double p) {
            return setProbability("dropout", p);
        }

        /** {@code leave_out}: AdapterDrop's fixed part, layers that get no adapter. */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }

        /** {@code adapter_drop}: AdapterDrop in training, skipping the lowest n layers (n random per batch). */
        public Builder adapterDrop(boolean on) {
            return set("adapter_drop", on);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
