package org.peft4j.config;

import java.util.Map;

/**
 * Compacter, Compacter++ and the PHM adapter: bottleneck adapters ({@code peft_type} BOTTLENECK with {@code
 * phm_layer}) whose projections are sums of Kronecker products {@code Σ A_i ⊗ W_i} with rule matrices shared by all
 * layers. AdapterHub's field names and presets; see docs/methods.md.
 *
 * <pre>{@code
 * CompacterConfig config = CompacterConfig.compacterPlusPlus().phmDim(4).build();
 * }</pre>
 */
public final class CompacterConfig extends TunerConfig {
    private CompacterConfig(Map<String, Object> fields) {
        super("BOTTLENECK", fields);
    }

    /** Compacter: PHM adapters after the attention and the FFN, rank-1 slow weights, reduction 32, GELU. */
    public static Builder compacter() {
        return new Builder().set("phm_layer", true).set("mh_adapter", true).set("output_adapter", true)
                .set("reduction_factor", 32).set("non_linearity", "gelu");
    }

    /** Compacter++: Compacter after the FFN only. */
    public static Builder compacterPlusPlus() {
        return compacter().set("mh_adapter", false);
    }

    /** The PHM adapter: Compacter++'s placement with full (unfactorised) slow weights. */
    public static Builder phmAdapter() {
        return compacterPlusPlus().set("factorized_phm_W", false);
    }

    /** Builds a {@link CompacterConfig}; each setter maps to the AdapterHub field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, CompacterConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected CompacterConfig create(Map<String, Object> fields) {
            return new CompacterConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code phm_dim}: n, the number of Kronecker terms (must divide the hidden and bottleneck widths). */
        public Builder phmDim(int n) {
            return setPositive("phm_dim", n);
        }

        /** {@code phm_rank}: the rank of the factorised slow weights. */
        public Builder phmRank(int rank) {
            return setPositive("phm_rank", rank);
        }

        /** {@code reduction_factor}: bottleneck width = hidden size / factor. */
        public Builder reductionFactor(int factor) {
            return setPositive("reduction_factor", factor);
        }

        /** {@code shared_phm_rule}: one rule tensor for all layers of the adapter (default true). */
        public Builder sharedPhmRule(boolean on) {
            return set("shared_phm_rule", on);
        }

        /** {@code phm_c_init}: "normal" (N(0, phm_init_range)) or "uniform" (U(-1, 1)) rule matrices. */
        public Builder phmCInit(String how) {
            return set("phm_c_init", how);
        }

        /** {@code leave_out}: layers that get no adapter. */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }
    }
}
