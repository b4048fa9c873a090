package org.peft4j.config;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * UniPELT of Mao et al. (ACL 2022) ({@code peft_type} UNIPELT, a peft4j method HF PEFT lacks): LoRA, prefix tuning and
 * a sequential bottleneck adapter in every layer, each scaled by a learned gate (the sequence mean of a sigmoid of its
 * input), trained as one adapter. The three parts are given as their own configs and saved nested
 * ({@code prefix_tuning}, {@code adapter}, {@code lora}); a part left unset takes AdapterHub's UniPELTConfig defaults
 * (10 virtual tokens through a projection of width 512; a Pfeiffer adapter of reduction 16; LoRA of rank 8 on the
 * query and value projections). The LoRA part takes no {@code lora_alpha}: its gate replaces the scaling. Models:
 * llama, qwen2, mistral, gpt2, bert. The gates average over the whole sequence, so these adapters run without KV cache.
 * See docs/methods.md.
 *
 * <pre>{@code
 * UniPeltConfig config = UniPeltConfig.builder()
 *         .prefixTuning(PrefixTuningConfig.builder().numVirtualTokens(10).prefixProjection(true).build())
 *         .adapter(BottleneckConfig.pfeiffer().reductionFactor(16).build())
 *         .lora(LoraConfig.builder().r(8).targetModules("q_proj", "v_proj").build())
 *         .build();
 * }</pre>
 */
public final class UniPeltConfig extends TunerConfig {
    private UniPeltConfig(Map<String, Object> fields) {
        super("UNIPELT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link UniPeltConfig} from the configs of its three parts. */
    public static final class Builder extends TunerConfig.Builder<Builder, UniPeltConfig> {
        private Boolean sharedGating;

        @Override
        protected Builder self() {
            return this;
        }

        @Override
        @SuppressWarnings("unchecked")
        protected UniPeltConfig create(Map<String, Object> fields) {
            if (sharedGating == null) {
                return new UniPeltConfig(fields);
            }
            Map<String, Object> all = new LinkedHashMap<>(fields);
            Map<String, Object> prefix = new LinkedHashMap<>(
                    (Map<String, Object>) all.getOrDefault("prefix_tuning", Map.of()));
            prefix.put("shared_gating", sharedGating);
            all.put("prefix_tuning", prefix);
            return new UniPeltConfig(all);
        }

        /** {@code prefix_tuning}: the prefix-tuning part (its num_virtual_tokens, projection, init). */
        public Builder prefixTuning(PrefixTuningConfig prefix) {
            return setPart("prefix_tuning", prefix);
        }

        /**
         * {@code prefix_tuning.shared_gating}: one gate for the prefix keys and values of a layer (true, the default)
         * or one each.
         */
        public Builder sharedGating(boolean shared) {
            sharedGating = shared;
            return this;
        }

        /**
         * {@code adapter}: the bottleneck part (placement, width, non-linearity, leave_out, ...); it is always gated,
         * and AdapterFusion or Average are refused when the adapter is added.
         */
        public Builder adapter(BottleneckConfig adapter) {
            return setPart("adapter", adapter);
        }

        /** {@code lora}: the LoRA part (r, target_modules, dropout, layers); lora_alpha is refused when added. */
        public Builder lora(LoraConfig lora) {
            return setPart("lora", lora);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
