package org.peft4j.config;

import java.util.Map;

/**
 * RandLoRA: full-rank updates from a sum of shared frozen random low-rank bases with trainable diagonal scalings.
 * PEFT's field names ({@code peft_type} RANDLORA); unset fields take PEFT's defaults in the core, so the saved
 * {@code adapter_config.json} loads in PEFT.
 */
public final class RandLoraConfig extends TunerConfig {
    private RandLoraConfig(Map<String, Object> fields) {
        super("RANDLORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link RandLoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, RandLoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected RandLoraConfig create(Map<String, Object> fields) {
            return new RandLoraConfig(fields);
        }

        /** {@code r}: the rank of each random basis (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code randlora_alpha}: the scaling numerator (default 640). */
        public Builder randloraAlpha(double randloraAlpha) {
            return set("randlora_alpha", randloraAlpha);
        }

        /** {@code projection_prng_key}: the seed PEFT draws the bases from (default 0). */
        public Builder projectionPrngKey(int projectionPrngKey) {
            return set("projection_prng_key", projectionPrngKey);
        }

        /** {@code save_projection}: save the bases with the adapter (default true). */
        public Builder saveProjection(boolean saveProjection) {
            return set("save_projection", saveProjection);
        }

        /** {@code sparse}: ternary sparse bases (default false). */
        public Builder sparse(boolean sparse) {
            return set("sparse", sparse);
        }

        /** {@code very_sparse}: very sparse ternary bases (default false). */
        public Builder verySparse(boolean verySparse) {
            return set("very_sparse", verySparse);
        }

        /** {@code randlora_dropout}: dropout on the adapter input in training (default 0). */
        public Builder randloraDropout(double randloraDropout) {
            return setProbability("randlora_dropout", randloraDropout);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): one scaling starts at zero (identity). */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
