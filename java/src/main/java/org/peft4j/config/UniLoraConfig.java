package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * Uni-LoRA: every entry of every layer's LoRA pair picked from one trainable vector θ_d by fixed indices (Linear and
 * GPT-2 Conv1D layers). PEFT's field names ({@code peft_type} UNILORA); unset fields take PEFT's defaults in the core,
 * so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class UniLoraConfig extends TunerConfig {
    private UniLoraConfig(Map<String, Object> fields) {
        super("UNILORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link UniLoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, UniLoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected UniLoraConfig create(Map<String, Object> fields) {
            return new UniLoraConfig(fields);
        }

        /** {@code r}: the rank of the LoRA pairs (default 4). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code theta_d_length}: the length of the trainable vector θ_d (default 256). */
        public Builder thetaDLength(int thetaDLength) {
            return setPositive("theta_d_length", thetaDLength);
        }

        /** {@code proj_seed}: NumPy's seed for the index assignment, non-negative (default 42). */
        public Builder projSeed(int projSeed) {
            if (projSeed < 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "proj_seed must be >= 0, got " + projSeed);
            }
            return set("proj_seed", projSeed);
        }

        /** {@code init_theta_d_bound}: θ_d starts in U(-bound, bound) (default 0.02). */
        public Builder initThetaDBound(double initThetaDBound) {
            return set("init_theta_d_bound", initThetaDBound);
        }

        /** {@code save_indices}: save the index and scale buffers with the adapter (default false: regenerated). */
        public Builder saveIndices(boolean saveIndices) {
            return set("save_indices", saveIndices);
        }

        /** {@code unilora_dropout}: dropout on the adapter's input. */
        public Builder uniloraDropout(double uniloraDropout) {
            return setProbability("unilora_dropout", uniloraDropout);
        }

        /** {@code fan_in_fan_out}: true for GPT-2's Conv1D ([in, out] weights). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true: θ_d ~ U(-init_theta_d_bound, init_theta_d_bound) (default); false: N(0, 1). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
