package org.peft4j.config;

import java.util.Map;

/**
 * TinyLoRA: LoRA-XS over the base weight's frozen rank-r SVD, with the r × r core spanned by fixed random projections
 * and a tiny trainable vector v that weight_tying lets layers share (Linear, GPT-2 Conv1D and Embedding layers). PEFT's
 * field names ({@code peft_type} TINYLORA); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class TinyLoraConfig extends TunerConfig {
    private TinyLoraConfig(Map<String, Object> fields) {
        super("TINYLORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link TinyLoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, TinyLoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected TinyLoraConfig create(Map<String, Object> fields) {
            return new TinyLoraConfig(fields);
        }

        /** {@code r}: the SVD rank (default 2). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code u}: the length of each trainable vector v (default 64). */
        public Builder u(int u) {
            return setPositive("u", u);
        }

        /** {@code weight_tying}: 0 (every layer its own v, the default) to 1 (one v for all). */
        public Builder weightTying(double weightTying) {
            return setFraction("weight_tying", weightTying);
        }

        /** {@code projection_seed}: the seed of the fixed projections (default 42). */
        public Builder projectionSeed(int projectionSeed) {
            return set("projection_seed", projectionSeed);
        }

        /** {@code save_projection}: save the projections with the adapter (default true) or regenerate them. */
        public Builder saveProjection(boolean saveProjection) {
            return set("save_projection", saveProjection);
        }

        /** {@code init_v_bound}: v starts in U(-bound, bound) with uniformInit() (default 0.02). */
        public Builder initVBound(double initVBound) {
            return set("init_v_bound", initVBound);
        }

        /** {@code tinylora_dropout}: dropout on the adapter's input. */
        public Builder tinyloraDropout(double tinyloraDropout) {
            return setProbability("tinylora_dropout", tinyloraDropout);
        }

        /** {@code fan_in_fan_out}: true for GPT-2's Conv1D ([in, out] weights). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true: v = 0, the identity (default); false: v left uninitialised, as PEFT. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code init_weights = "uniform"}: v starts in U(-init_v_bound, init_v_bound). */
        public Builder uniformInit() {
            return set("init_weights", "uniform");
        }
    }
}
