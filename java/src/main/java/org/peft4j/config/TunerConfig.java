package org.peft4j.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.peft4j.PeftException;

/**
 * The common part of the per-method configs ({@link LoraConfig}, {@link LoHaConfig}, ...): the fields PEFT's
 * {@code adapter_config.json} names, set through a builder. Fields left unset take PEFT's defaults in the core, so an
 * adapter saved from any of these configs loads in PEFT.
 */
public abstract class TunerConfig implements AdapterConfig {
    private final String peftType;
    private final Map<String, Object> fields;

    protected TunerConfig(String peftType, Map<String, Object> fields) {
        this.peftType = peftType;
        this.fields = Map.copyOf(fields);
    }

    @Override
    public final String peftType() {
        return peftType;
    }

    @Override
    public final String toJson() {
        Map<String, Object> all = new LinkedHashMap<>(fields);
        all.put("peft_type", peftType);
        try {
            return new ObjectMapper().writeValueAsString(all);
        } catch (JsonProcessingException e) {
            throw new PeftException(PeftException.Kind.INTERNAL,
                    "cannot write the " + peftType + " config: " + e.getMessage(), e);
        }
    }

    /** A field as PEFT names it, or null when left to PEFT's default. */
    public final Object get(String peftFieldName) {
        return fields.get(peftFieldName);
    }

    /**
     * The builder every method's builder extends: checked setters for PEFT's fields and the task.
     *
     * @param <B> the method's builder
     * @param <C> the method's config
     */
    public abstract static class Builder<B extends Builder<B, C>, C extends TunerConfig> {
        private final Map<String, Object> fields = new LinkedHashMap<>();

        protected abstract B self();

        protected abstract C create(Map<String, Object> fields);

        protected final B set(String name, Object value) {
            fields.put(name, Objects.requireNonNull(value, name));
            return self();
        }

        protected final B setPositive(String name, int value) {
            if (value <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " must be positive, got " + value);
            }
            return set(name, value);
        }

        protected final B setProbability(String name, double p) {
            if (!(p >= 0 && p < 1)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " must be in [0, 1), got " + p);
            }
            return set(name, p);
        }

        protected final B setFraction(String name, double value) {
            if (!(value >= 0 && value <= 1)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " must be in [0, 1], got " + value);
            }
            return set(name, value);
        }

        protected final B setNames(String name, String... values) {
            return set(name, List.of(values));
        }

        protected final B setInts(String name, int... values) {
            return set(name, Arrays.stream(values).boxed().toList());
        }

        protected final B setPattern(String name, Map<String, ? extends Number> pattern) {
            return set(name, Map.copyOf(pattern));
        }

        /** A method's config nested as one part of a composed method (MAM, UniPELT): its fields, no peft_type. */
        protected final B setPart(String name, TunerConfig part) {
            return set(name, new LinkedHashMap<>(part.fields));
        }

        /** Fails naming the field and its setters when a required field is unset. */
        protected final void require(String name, String setters) {
            if (!fields.containsKey(name)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " is required (" + setters + ")");
            }
        }

        /** Checks the fields together before build() makes the config; the default checks nothing. */
        protected void validate() {}

        /** {@code task_type}: PEFT's task ("CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM"), recorded in the config. */
        public final B taskType(String taskType) {
            return set("task_type", taskType);
        }

        public final C build() {
            validate();
            return create(fields);
        }
    }

    /**
     * The builder of methods that adapt modules chosen by name ({@code target_modules}).
     *
     * @param <B> the method's builder
     * @param <C> the method's config
     */
    public abstract static class TargetedBuilder<B extends TargetedBuilder<B, C>, C extends TunerConfig>
            extends Builder<B, C> {
        /**
         * {@code target_modules}: module names, matched as the name or a ".name" suffix. The one name
         * {@code "all-linear"} (any case) means {@link #allLinear()}, as PEFT's string does.
         */
        public final B targetModules(String... names) {
            if (names.length == 1 && "all-linear".equalsIgnoreCase(names[0])) {
                return allLinear();
            }
            return setNames("target_modules", names);
        }

        /** {@code target_modules} as a regular expression that must match the whole module path. */
        public final B targetModulesRegex(String regex) {
            return set("target_modules", regex);
        }

        /** {@code target_modules = "all-linear"}: every Linear/Conv1D layer except the output layer. */
        public final B allLinear() {
            return set("target_modules", "all-linear");
        }

        /** Whether build() insists on target modules (methods with a fixed target, or none, say no). */
        protected boolean requiresTargetModules() {
            return true;
        }

        @Override
        protected void validate() {
            if (requiresTargetModules()) {
                require("target_modules", "targetModules, targetModulesRegex or allLinear");
            }
        }
    }

    /**
     * The builder of methods that take PEFT's layer indices and the modules trained in full beside the adapter.
     *
     * @param <B> the method's builder
     * @param <C> the method's config
     */
    public abstract static class LayerIndexBuilder<B extends LayerIndexBuilder<B, C>, C extends TunerConfig>
            extends TargetedBuilder<B, C> {
        /** {@code layers_to_transform}: only these layer indices. */
        public final B layersToTransform(int... layers) {
            return setInts("layers_to_transform", layers);
        }

        /** {@code layers_pattern}: the name of the layer list ("layers", "h", ...) when indices are given. */
        public final B layersPattern(String pattern) {
            return set("layers_pattern", pattern);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public final B modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }

    /**
     * The builder of methods that also take PEFT's {@code exclude_modules}.
     *
     * @param <B> the method's builder
     * @param <C> the method's config
     */
    public abstract static class LayerSelectingBuilder<B extends LayerSelectingBuilder<B, C>, C extends TunerConfig>
            extends LayerIndexBuilder<B, C> {
        /** {@code exclude_modules}: names never adapted. */
        public final B excludeModules(String... names) {
            return setNames("exclude_modules", names);
        }
    }
}
