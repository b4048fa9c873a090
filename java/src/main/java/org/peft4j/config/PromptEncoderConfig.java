package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * P-tuning ({@code PromptEncoderConfig} in PEFT): virtual-token embeddings reparameterised by an MLP or a
 * bidirectional LSTM and an MLP, prepended to the input.
 */
public final class PromptEncoderConfig extends PromptLearningConfig {
    private PromptEncoderConfig(Map<String, Object> fields) {
        super("P_TUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PromptEncoderConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends PromptLearningConfig.Builder<Builder, PromptEncoderConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PromptEncoderConfig create(Map<String, Object> fields) {
            return new PromptEncoderConfig(fields);
        }

        /** {@code encoder_reparameterization_type}: "MLP" (the default) or "LSTM". */
        public Builder encoderReparameterizationType(String type) {
            if (!"MLP".equals(type) && !"LSTM".equals(type)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "encoder_reparameterization_type must be MLP or LSTM, got " + type);
            }
            return set("encoder_reparameterization_type", type);
        }

        /** {@code encoder_hidden_size}: the encoder's hidden width (default: token_dim). */
        public Builder encoderHiddenSize(int size) {
            return setPositive("encoder_hidden_size", size);
        }

        /** {@code encoder_num_layers}: the LSTM's layers (default 2; the MLP always has 3 Linear layers). */
        public Builder encoderNumLayers(int layers) {
            return setPositive("encoder_num_layers", layers);
        }

        /** {@code encoder_dropout}: dropout between the LSTM's layers (default 0). */
        public Builder encoderDropout(double p) {
            if (!(p >= 0 && p < 1)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "encoder_dropout must be in [0, 1), got " + p);
            }
            return set("encoder_dropout", p);
        }
    }
}
