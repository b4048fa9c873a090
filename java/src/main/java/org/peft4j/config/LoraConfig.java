package org.peft4j.config;

import java.util.Map;

/**
 * LoRA's config with PEFT's field names ({@code LoraConfig} in PEFT). Fields left unset take PEFT's defaults in the
 * core, so the saved {@code adapter_config.json} loads in PEFT.
 *
 * <pre>{@code
 * LoraConfig config = LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "v_proj").build();
 * }</pre>
 */
public final class LoraConfig extends TunerConfig {
    private LoraConfig(Map<String, Object> fields) {
        super("LORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, LoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LoraConfig create(Map<String, Object> fields) {
            return new LoraConfig(fields);
        }

        /** {@code r}: the rank (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code lora_alpha}: the scaling numerator, scaling = lora_alpha / r (default 8). */
        public Builder loraAlpha(double alpha) {
            return set("lora_alpha", alpha);
        }

        /** {@code lora_dropout} on the LoRA input during training (default 0). */
        public Builder loraDropout(double p) {
            return setProbability("lora_dropout", p);
        }

        /** {@code use_rslora}: scaling = lora_alpha / sqrt(r). */
        public Builder useRslora(boolean on) {
            return set("use_rslora", on);
        }

        /** {@code use_dora}: weight-decomposed LoRA (a learned magnitude per output row). */
        public Builder useDora(boolean on) {
            return set("use_dora", on);
        }

        /** {@code bias}: "none", "all" or "lora_only" (which biases train with the adapter). */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code rank_pattern}: per-module ranks, keys matched as PEFT's get_pattern_key does. */
        public Builder rankPattern(Map<String, Integer> pattern) {
            return setPattern("rank_pattern", pattern);
        }

        /** {@code alpha_pattern}: per-module lora_alpha. */
        public Builder alphaPattern(Map<String, Double> pattern) {
            return setPattern("alpha_pattern", pattern);
        }

        /** {@code init_lora_weights}: true (B = 0, the default), false (random A and B) or "gaussian". */
        public Builder initLoraWeights(boolean init) {
            return set("init_lora_weights", init);
        }

        /** {@code init_lora_weights = "gaussian"}: A from N(0, 1/r), B = 0. */
        public Builder gaussianInit() {
            return set("init_lora_weights", "gaussian");
        }
    }
}
