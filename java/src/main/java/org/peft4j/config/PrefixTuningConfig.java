package org.peft4j.config;

import java.util.Map;

/**
 * Prefix tuning ({@code PrefixTuningConfig} in PEFT): trainable keys and values that every attention layer sees before
 * the input, optionally produced by a two-layer MLP ({@link Builder#prefixProjection}).
 */
public final class PrefixTuningConfig extends PromptLearningConfig {
    private PrefixTuningConfig(Map<String, Object> fields) {
        super("PREFIX_TUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PrefixTuningConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends PromptLearningConfig.Builder<Builder, PrefixTuningConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PrefixTuningConfig create(Map<String, Object> fields) {
            return new PrefixTuningConfig(fields);
        }

        /** {@code prefix_projection}: produce the prefixes with Linear-Tanh-Linear from token_dim-wide embeddings. */
        public Builder prefixProjection(boolean on) {
            return set("prefix_projection", on);
        }

        /** {@code encoder_hidden_size}: the projection's hidden width (only with prefix_projection). */
        public Builder encoderHiddenSize(int size) {
            return setPositive("encoder_hidden_size", size);
        }

        /** {@code init_weights = "zero"}: zero prefixes (or a zero last projection layer). */
        public Builder zeroInit() {
            return set("init_weights", "zero");
        }
    }
}
