package org.peft4j.config;

import java.util.Arrays;
import java.util.Map;
import java.util.Objects;
import org.peft4j.text.Tokenizer;
import org.peft4j.PeftException;

/**
 * Prompt tuning ({@code PromptTuningConfig} in PEFT): trainable virtual-token embeddings prepended to the input.
 * Initialised at random (the default), from rows of the vocabulary at random ids ({@link Builder#sampleVocabInit()}),
 * or from the embeddings of a text's tokens ({@link Builder#textInit}).
 *
 * <pre>{@code
 * PromptTuningConfig config = PromptTuningConfig.builder().numVirtualTokens(8)
 *         .textInit("Classify the review:", tokenizer, "my-model").build();
 * }</pre>
 */
public final class PromptTuningConfig extends PromptLearningConfig {
    private PromptTuningConfig(Map<String, Object> fields) {
        super("PROMPT_TUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PromptTuningConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends PromptLearningConfig.Builder<Builder, PromptTuningConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PromptTuningConfig create(Map<String, Object> fields) {
            return new PromptTuningConfig(fields);
        }

        /** {@code prompt_tuning_init = "RANDOM"}: N(0, 1) embeddings (the default). */
        public Builder randomInit() {
            return set("prompt_tuning_init", "RANDOM");
        }

        /** {@code prompt_tuning_init = "SAMPLE_VOCAB"}: rows of the word embedding at uniformly drawn token ids. */
        public Builder sampleVocabInit() {
            return set("prompt_tuning_init", "SAMPLE_VOCAB");
        }

        /**
         * {@code prompt_tuning_init = "TEXT"}: rows of the word embedding at the ids {@code tokenizer} gives
         * {@code text} (special tokens included, as PEFT tokenizes it), repeated or cut to the number of virtual
         * tokens. {@code tokenizerNameOrPath} is recorded as PEFT's {@code tokenizer_name_or_path}, which PEFT
         * requires for TEXT configs.
         */
        public Builder textInit(String text, Tokenizer tokenizer, String tokenizerNameOrPath) {
            Objects.requireNonNull(tokenizer, "tokenizer");
            return textInit(text, tokenizer.encode(Objects.requireNonNull(text, "text"), true), tokenizerNameOrPath);
        }

        /** As {@link #textInit(String, Tokenizer, String)} with the text's token ids already known. */
        public Builder textInit(String text, long[] tokenIds, String tokenizerNameOrPath) {
            if (tokenIds.length == 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "the init text has no tokens");
            }
            set("prompt_tuning_init", "TEXT");
            set("prompt_tuning_init_text", Objects.requireNonNull(text, "text"));
            set("tokenizer_name_or_path", Objects.requireNonNull(tokenizerNameOrPath, "tokenizerNameOrPath"));
            return set("prompt_tuning_init_token_ids", Arrays.stream(tokenIds).boxed().toList());
        }
    }
}
