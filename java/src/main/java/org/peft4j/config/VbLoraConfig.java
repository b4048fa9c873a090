package org.peft4j.config;

import java.util.Map;

/**
 * VB-LoRA: LoRA factors assembled from a shared vector bank by top-k mixing of learned logits. PEFT's field names
 * ({@code peft_type} VBLORA); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class VbLoraConfig extends TunerConfig {
    private VbLoraConfig(Map<String, Object> fields) {
        super("VBLORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link VbLoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, VbLoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected VbLoraConfig create(Map<String, Object> fields) {
            return new VbLoraConfig(fields);
        }

        /** {@code r}: the LoRA rank (default 4). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code num_vectors}: vectors in the shared bank (default 256). */
        public Builder numVectors(int numVectors) {
            return setPositive("num_vectors", numVectors);
        }

        /** {@code vector_length}: length of each vector; must divide the layers' in and out features (default 256). */
        public Builder vectorLength(int vectorLength) {
            return setPositive("vector_length", vectorLength);
        }

        /** {@code topk}: bank vectors mixed per sub-vector (default 2). */
        public Builder topk(int topk) {
            return setPositive("topk", topk);
        }

        /** {@code save_only_topk_weights}: save only the top-k indices and weights (inference only; default false). */
        public Builder saveOnlyTopkWeights(boolean saveOnlyTopkWeights) {
            return set("save_only_topk_weights", saveOnlyTopkWeights);
        }

        /** {@code vblora_dropout}: dropout on the adapter input in training (default 0). */
        public Builder vbloraDropout(double vbloraDropout) {
            return setProbability("vblora_dropout", vbloraDropout);
        }

        /** {@code init_vector_bank_bound}: the bank's uniform init bound (default 0.02). */
        public Builder initVectorBankBound(double initVectorBankBound) {
            return set("init_vector_bank_bound", initVectorBankBound);
        }

        /** {@code init_logits_std}: the logits' normal init std (default 0.1). */
        public Builder initLogitsStd(double initLogitsStd) {
            return set("init_logits_std", initLogitsStd);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }
    }
}
