package org.peft4j.config;

import java.util.Map;

/**
 * Trainable tokens: only the embedding rows of the given token ids train. PEFT's field names ({@code peft_type}
 * TRAINABLE_TOKENS); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads
 * in PEFT.
 */
public final class TrainableTokensConfig extends TunerConfig {
    private TrainableTokensConfig(Map<String, Object> fields) {
        super("TRAINABLE_TOKENS", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link TrainableTokensConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, TrainableTokensConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected TrainableTokensConfig create(Map<String, Object> fields) {
            return new TrainableTokensConfig(fields);
        }

        /** {@code token_indices}: the token ids whose embedding rows train. */
        public Builder tokenIndices(int... tokenIndices) {
            return setInts("token_indices", tokenIndices);
        }

        /** {@code init_weights}: true (the default): the rows start as the embedding's own; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
