package org.peft4j.config;

import java.util.Map;

/**
 * GraLoRA: the weight cut into a k × k grid of blocks, each input block with its own A and each output block with its
 * own B, optionally beside a plain LoRA of rank hybrid_r (Linear and GPT-2 Conv1D layers). PEFT's field names
 * ({@code peft_type} GRALORA); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class GraloraConfig extends TunerConfig {
    private GraloraConfig(Map<String, Object> fields) {
        super("GRALORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link GraloraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, GraloraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected GraloraConfig create(Map<String, Object> fields) {
            return new GraloraConfig(fields);
        }

        /** {@code r}: the rank of every block pair's A/B, divisible by gralora_k (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code gralora_k}: blocks per side; must divide the layer's in and out features (default 2). */
        public Builder graloraK(int graloraK) {
            return setPositive("gralora_k", graloraK);
        }

        /** {@code hybrid_r}: the rank of the plain LoRA beside the blocks; 0 for none (default). */
        public Builder hybridR(int hybridR) {
            return set("hybrid_r", hybridR);
        }

        /** {@code alpha}: the scaling is alpha / (r + hybrid_r) (default 64). */
        public Builder alpha(double alpha) {
            return set("alpha", alpha);
        }

        /** {@code gralora_dropout}: dropout on the adapter's input. */
        public Builder graloraDropout(double graloraDropout) {
            return setProbability("gralora_dropout", graloraDropout);
        }

        /** {@code fan_in_fan_out}: true for GPT-2's Conv1D ([in, out] weights). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true: every B = 0, the adapter starts as the identity; false: all random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
