package org.peft4j;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * A config of methods that target no modules by name (prompt learning, adaption prompt): PEFT's fields as set
 * through a builder, written as {@code adapter_config.json}. Unset fields take PEFT's defaults in the core.
 */
abstract class MethodConfig implements AdapterConfig {
    private final String peftType;
    private final Map<String, Object> fields;

    MethodConfig(String peftType, Map<String, Object> fields) {
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

    /** Field storage with checked setters for the builders. */
    abstract static class Fields<B> {
        final Map<String, Object> fields = new LinkedHashMap<>();

        abstract B self();

        final B set(String name, Object value) {
            fields.put(name, Objects.requireNonNull(value, name));
            return self();
        }

        final B setPositive(String name, int value) {
            if (value <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " must be positive, got " + value);
            }
            return set(name, value);
        }

        final void require(String name, String setter) {
            if (!fields.containsKey(name)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, name + " is required (" + setter + ")");
            }
        }
    }
}
