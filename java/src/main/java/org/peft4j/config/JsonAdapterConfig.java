package org.peft4j.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.Objects;
import org.peft4j.PeftException;

/** An adapter config given as PEFT's JSON text. */
final class JsonAdapterConfig implements AdapterConfig {
    private final String json;
    private final String peftType;

    JsonAdapterConfig(String json) {
        Objects.requireNonNull(json, "json");
        JsonNode node;
        try {
            node = new ObjectMapper().readTree(json);
        } catch (JsonProcessingException e) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "adapter config is not valid JSON: " + e.getOriginalMessage());
        }
        if (node == null || !node.isObject() || !node.path("peft_type").isTextual()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "adapter config has no \"peft_type\" string");
        }
        this.json = json;
        this.peftType = node.get("peft_type").asText();
    }

    @Override
    public String peftType() {
        return peftType;
    }

    @Override
    public String toJson() {
        return json;
    }
}
