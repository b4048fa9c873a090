package org.peft4j.config;

import java.util.Map;

/**
 * FRoD: the adapted weight U (S + diag(lambda)) V^T per layer, with V shared by the layers of one module category
 * (built from their stacked weights), U frozen, and lambda and the values of a sparse off-diagonal S trained. PEFT's
 * field names ({@code peft_type} FROD); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class FrodConfig extends TunerConfig {
    private FrodConfig(Map<String, Object> fields) {
        super("FROD", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link FrodConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, FrodConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected FrodConfig create(Map<String, Object> fields) {
            return new FrodConfig(fields);
        }

        /** {@code projection_prng_key}: the seed of the sparse positions of S (default 0). */
        public Builder projectionPrngKey(int projectionPrngKey) {
            return set("projection_prng_key", projectionPrngKey);
        }

        /** {@code save_projection}: save V and the sparse layout with the adapter (default true). */
        public Builder saveProjection(boolean saveProjection) {
            return set("save_projection", saveProjection);
        }

        /** {@code frod_dropout}: dropout on the layer input in training (default 0). */
        public Builder frodDropout(double frodDropout) {
            return setProbability("frod_dropout", frodDropout);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): S = 0, so W' = W; false: random S and lambda. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code sparse_rate}: the fraction of S's off-diagonal entries that train (default 0.01). */
        public Builder sparseRate(double sparseRate) {
            return setFraction("sparse_rate", sparseRate);
        }

        /** {@code regularization_alpha}: the ridge term of the shared basis' inverses (default 1e-3). */
        public Builder regularizationAlpha(double regularizationAlpha) {
            return set("regularization_alpha", regularizationAlpha);
        }
    }
}
