package org.peft4j;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * LoRA's config with PEFT's field names ({@code LoraConfig} in PEFT). Fields left unset take PEFT's defaults in the
 * core, so the saved {@code adapter_config.json} loads in PEFT.
 *
 * <pre>{@code
 * LoraConfig config = LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "v_proj").build();
 * }</pre>
 */
public final class LoraConfig implements AdapterConfig {
    private final Map<String, Object> fields;

    private LoraConfig(Map<String, Object> fields) {
        this.fields = Map.copyOf(fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    @Override
    public String peftType() {
        return "LORA";
    }

    @Override
    public String toJson() {
        Map<String, Object> all = new LinkedHashMap<>(fields);
        all.put("peft_type", "LORA");
        try {
            return new ObjectMapper().writeValueAsString(all);
        } catch (JsonProcessingException e) {
            throw new PeftException(PeftException.Kind.INTERNAL, "cannot write the LoRA config: " + e.getMessage(), e);
        }
    }

    /** A field as PEFT names it, or null when left to PEFT's default. */
    public Object get(String peftFieldName) {
        return fields.get(peftFieldName);
    }

    /** Builds a {@link LoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder {
        private final Map<String, Object> fields = new LinkedHashMap<>();

        private Builder set(String name, Object value) {
            fields.put(name, Objects.requireNonNull(value, name));
            return this;
        }

        /** {@code r}: the rank (default 8). */
        public Builder r(int r) {
            if (r <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "r must be positive, got " + r);
            }
            return set("r", r);
        }

        /** {@code lora_alpha}: the scaling numerator, scaling = lora_alpha / r (default 8). */
        public Builder loraAlpha(double alpha) {
            return set("lora_alpha", alpha);
        }

        /** {@code target_modules}: module names, matched as the name or a ".name" suffix. */
        public Builder targetModules(String... names) {
            return set("target_modules", List.of(names));
        }

        /** {@code target_modules} as a regular expression that must match the whole module path. */
        public Builder targetModulesRegex(String regex) {
            return set("target_modules", regex);
        }

        /** {@code target_modules = "all-linear"}: every Linear/Conv1D layer except the output layer. */
        public Builder allLinear() {
            return set("target_modules", "all-linear");
        }

        /** {@code exclude_modules}: names never adapted. */
        public Builder excludeModules(String... names) {
            return set("exclude_modules", List.of(names));
        }

        /** {@code lora_dropout} on the LoRA input during training (default 0). */
        public Builder loraDropout(double p) {
            return set("lora_dropout", p);
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

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return set("modules_to_save", List.of(names));
        }

        /** {@code rank_pattern}: per-module ranks, keys matched as PEFT's get_pattern_key does. */
        public Builder rankPattern(Map<String, Integer> pattern) {
            return set("rank_pattern", Map.copyOf(pattern));
        }

        /** {@code alpha_pattern}: per-module lora_alpha. */
        public Builder alphaPattern(Map<String, Double> pattern) {
            return set("alpha_pattern", Map.copyOf(pattern));
        }

        /** {@code layers_to_transform}: only these layer indices. */
        public Builder layersToTransform(int... layers) {
            return set("layers_to_transform", java.util.Arrays.stream(layers).boxed().toList());
        }

        /** {@code layers_pattern}: the name of the layer list ("layers", "h", ...) when indices are given. */
        public Builder layersPattern(String pattern) {
            return set("layers_pattern", pattern);
        }

        /** {@code init_lora_weights}: true (B = 0, the default), false (random A and B) or "gaussian". */
        public Builder initLoraWeights(boolean init) {
            return set("init_lora_weights", init);
        }

        /** {@code init_lora_weights = "gaussian"}: A from N(0, 1/r), B = 0. */
        public Builder gaussianInit() {
            return set("init_lora_weights", "gaussian");
        }

        /** {@code task_type}: PEFT's task ("CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM"), recorded in the config. */
        public Builder taskType(String taskType) {
            return set("task_type", taskType);
        }

        public LoraConfig build() {
            if (!fields.containsKey("target_modules")) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "target_modules is required (targetModules, targetModulesRegex or allLinear)");
            }
            return new LoraConfig(fields);
        }
    }
}
