package org.peft4j.config;

import java.util.Map;

/**
 * The fields PEFT's prompt-learning configs share ({@code PromptLearningConfig}): the number of virtual tokens and
 * the model sizes they are shaped by (left unset, the core reads them from the model as PEFT does).
 */
public abstract class PromptLearningConfig extends TunerConfig {
    PromptLearningConfig(String peftType, Map<String, Object> fields) {
        super(peftType, fields);
    }

    /**
     * The builder every prompt-learning builder extends.
     *
     * @param <B> the method's builder
     * @param <C> the method's config
     */
    public abstract static class Builder<B extends Builder<B, C>, C extends PromptLearningConfig>
            extends TunerConfig.Builder<B, C> {
        /** {@code num_virtual_tokens}: how many virtual tokens (required). */
        public final B numVirtualTokens(int count) {
            return setPositive("num_virtual_tokens", count);
        }

        /** {@code token_dim}: the width of a virtual token (default: the model's hidden size). */
        public final B tokenDim(int dim) {
            return setPositive("token_dim", dim);
        }

        /** {@code num_transformer_submodules}: 2 for encoder-decoder models (the default there), else 1. */
        public final B numTransformerSubmodules(int count) {
            return setPositive("num_transformer_submodules", count);
        }

        /** {@code num_attention_heads} (default: the model's; prefix tuning: its key/value heads). */
        public final B numAttentionHeads(int heads) {
            return setPositive("num_attention_heads", heads);
        }

        /** {@code num_layers} (default: the model's number of layers). */
        public final B numLayers(int layers) {
            return setPositive("num_layers", layers);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public final B modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }

        @Override
        protected void validate() {
            require("num_virtual_tokens", "numVirtualTokens");
        }
    }
}
