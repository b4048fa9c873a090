package org.peft4j.config;

import java.util.Map;

/**
 * Adaption prompt, LLaMA-Adapter ({@code AdaptionPromptConfig} in PEFT): gated prompts read by the top attention
 * layers of a llama or mistral model. The gates start at zero, so a new adapter leaves the model's outputs unchanged.
 */
public final class AdaptionPromptConfig extends TunerConfig {
    private AdaptionPromptConfig(Map<String, Object> fields) {
        super("ADAPTION_PROMPT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds an {@link AdaptionPromptConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.Builder<Builder, AdaptionPromptConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        /** {@code adapter_len}: prompt vectors per adapted layer (required). */
        public Builder adapterLen(int length) {
            return setPositive("adapter_len", length);
        }

        /** {@code adapter_layers}: how many of the top attention layers are adapted (required). */
        public Builder adapterLayers(int layers) {
            return setPositive("adapter_layers", layers);
        }

        /** {@code target_modules}: the attention modules' name (default "self_attn"). */
        public Builder targetModules(String name) {
            return set("target_modules", name);
        }

        @Override
        protected AdaptionPromptConfig create(Map<String, Object> fields) {
            return new AdaptionPromptConfig(fields);
        }

        @Override
        protected void validate() {
            require("adapter_len", "adapterLen");
            require("adapter_layers", "adapterLayers");
        }
    }
}
