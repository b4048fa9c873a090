package org.peft4j.config;

import java.util.Map;

/**
 * AdaLoRA: SVD-form LoRA (P·Λ·Q) whose rank budget is reallocated by importance during training, with an
 * orthogonality regulariser on P and Q. PEFT's field names ({@code peft_type} ADALORA); unset fields take PEFT's
 * defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class AdaLoraConfig extends TunerConfig {
    private AdaLoraConfig(Map<String, Object> fields) {
        super("ADALORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link AdaLoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, AdaLoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected AdaLoraConfig create(Map<String, Object> fields) {
            return new AdaLoraConfig(fields);
        }

        /** {@code init_r}: the initial rank of every adapted layer (default 12). */
        public Builder initR(int initR) {
            return setPositive("init_r", initR);
        }

        /** {@code target_r}: the average rank the budget is pruned to (default 8). */
        public Builder targetR(int targetR) {
            return setPositive("target_r", targetR);
        }

        /** {@code tinit}: warm-up steps before pruning starts (default 0). */
        public Builder tinit(int tinit) {
            return set("tinit", tinit);
        }

        /** {@code tfinal}: final steps with the budget fixed (default 0). */
        public Builder tfinal(int tfinal) {
            return set("tfinal", tfinal);
        }

        /** {@code deltaT}: steps between two budget allocations (default 1). */
        public Builder deltaT(int deltaT) {
            return setPositive("deltaT", deltaT);
        }

        /** {@code beta1}: EMA coefficient of the importance sensitivity (default 0.85). */
        public Builder beta1(double beta1) {
            return set("beta1", beta1);
        }

        /** {@code beta2}: EMA coefficient of the importance uncertainty (default 0.85). */
        public Builder beta2(double beta2) {
            return set("beta2", beta2);
        }

        /** {@code orth_reg_weight}: weight of the orthogonality regulariser in the loss (default 0.5). */
        public Builder orthRegWeight(double orthRegWeight) {
            return set("orth_reg_weight", orthRegWeight);
        }

        /** {@code total_step}: the total number of training steps (required to train). */
        public Builder totalStep(int totalStep) {
            return setPositive("total_step", totalStep);
        }

        /** {@code lora_alpha}: the scaling numerator (default 8). */
        public Builder loraAlpha(double loraAlpha) {
            return set("lora_alpha", loraAlpha);
        }

        /** {@code lora_dropout}: dropout on the adapter input in training (default 0). */
        public Builder loraDropout(double loraDropout) {
            return setProbability("lora_dropout", loraDropout);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none", "all" or "lora_only". */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_lora_weights}: true (the default): Λ = 0 and P, Q ~ N(0, 0.02); false: all N(0, 1). */
        public Builder initLoraWeights(boolean initLoraWeights) {
            return set("init_lora_weights", initLoraWeights);
        }
    }
}
