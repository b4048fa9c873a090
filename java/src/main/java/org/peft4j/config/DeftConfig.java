package org.peft4j.config;

import java.util.Map;

/**
 * DEFT: a trained projection direction P and injection R per layer replace a subspace of the frozen weight, W' = (I
 * - P_proj) W + (alpha / r) Q_P R; PaRa ({@code para}) keeps only the removal. PEFT's field names ({@code peft_type}
 * DEFT); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class DeftConfig extends TunerConfig {
    private DeftConfig(Map<String, Object> fields) {
        super("DEFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link DeftConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, DeftConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected DeftConfig create(Map<String, Object> fields) {
            return new DeftConfig(fields);
        }

        /** {@code r}: the rank of P and R, capped at the layer's output size (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code decomposition_method}: "relu" (P_proj = P relu(P)^T, the default) or "qr" (orthogonal). */
        public Builder decompositionMethod(String decompositionMethod) {
            return set("decomposition_method", decompositionMethod);
        }

        /** {@code init_scale}: scales the std of R's random init (init_weights false; default 1). */
        public Builder initScale(double initScale) {
            return set("init_scale", initScale);
        }

        /** {@code alpha}: the injection is scaled by alpha / r (default: unscaled). */
        public Builder alpha(int alpha) {
            return set("alpha", alpha);
        }

        /** {@code para}: PaRa, pure subspace removal without R (default false). */
        public Builder para(boolean para) {
            return set("para", para);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code deft_dropout}: dropout on the layer input in training (default 0). */
        public Builder deftDropout(double deftDropout) {
            return setProbability("deft_dropout", deftDropout);
        }

        /** {@code init_weights}: true (the default): R starts so that W' = W; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }
    }
}
