package org.peft4j.config;

/**
 * A PEFT adapter configuration: PEFT's {@code adapter_config.json} with its {@code peft_type}. {@link LoraConfig}
 * builds one for LoRA; {@link #fromJson(String)} takes any method's config as PEFT writes it.
 */
public interface AdapterConfig {
    /** PEFT's method name ("LORA", "IA3", ...). */
    String peftType();

    /** The config as PEFT's adapter_config.json text. */
    String toJson();

    /** A config given as adapter_config.json text; the core checks it when an adapter is added. */
    static AdapterConfig fromJson(String json) {
        return new JsonAdapterConfig(json);
    }
}
