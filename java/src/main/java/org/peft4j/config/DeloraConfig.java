package org.peft4j.config;

import java.util.Map;

/**
 * DeLoRA: a rank-r update whose rank-1 terms are normalised and bounded by a trainable λ, scaled by the base weight's
 * column norms (Linear layers). PEFT's field names ({@code peft_type} DELORA); unset fields take PEFT's defaults in the
 * core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class DeloraConfig extends TunerConfig {
    private DeloraConfig(Map<String, Object> fields) {
        super("DELORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link DeloraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, DeloraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected DeloraConfig create(Map<String, Object> fields) {
            return new DeloraConfig(fields);
        }

        /** {@code r}: the rank (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code delora_lambda}: the initial bound λ on the update's norm (default 15). */
        public Builder deloraLambda(double deloraLambda) {
            return set("delora_lambda", deloraLambda);
        }

        /** {@code module_dropout}: dropout on the adapter's input. */
        public Builder moduleDropout(double moduleDropout) {
            return setProbability("module_dropout", moduleDropout);
        }

        /** {@code rank_pattern}: per-module r. */
        public Builder rankPattern(Map<String, Integer> rankPattern) {
            return setPattern("rank_pattern", rankPattern);
        }

        /** {@code lambda_pattern}: per-module delora_lambda. */
        public Builder lambdaPattern(Map<String, ? extends Number> lambdaPattern) {
            return setPattern("lambda_pattern", lambdaPattern);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true: B = 0, the adapter starts as the identity; false: A and B random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
