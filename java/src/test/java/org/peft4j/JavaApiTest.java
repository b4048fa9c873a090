package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.peft4j.config.LoraConfig;

/** Conveniences of the Java API: PEFT's "all-linear" string, and the named trainability of a loaded adapter. */
class JavaApiTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final Path ADAPTER = TestFiles.golden().resolve("cases/lora_llama_all/adapter");

    @Test
    void allLinearAsATargetModuleNameIsPeftsShorthand() {
        String shorthand = LoraConfig.builder().allLinear().build().toJson();
        assertTrue(shorthand.contains("\"target_modules\":\"all-linear\""), shorthand);
        assertEquals(shorthand, LoraConfig.builder().targetModules("all-linear").build().toJson());
        assertEquals(shorthand, LoraConfig.builder().targetModules("ALL-LINEAR").build().toJson());
        // Wrapped, it reaches every linear layer but the LM head, as the seven projections named one by one do.
        assertEquals(trainable(LoraConfig.builder().r(2).targetModules("q_proj", "k_proj", "v_proj", "o_proj",
                        "gate_proj", "up_proj", "down_proj").build()),
                trainable(LoraConfig.builder().r(2).targetModules("all-linear").build()));
    }

    private static long trainable(LoraConfig config) {
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel peft = PeftModel.create(base, "default", config)) {
            return peft.trainableParameterCount();
        }
    }

    @Test
    void loadedAdaptersTrainOnlyWhenAskedByName() {
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel frozen = PeftModel.load(base, ADAPTER, "default", Trainability.FROZEN)) {
            assertEquals(0, frozen.trainableParameterCount());
        }
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel trainable = PeftModel.load(base, ADAPTER, "default", Trainability.TRAINABLE);
                NamedTensors saved = SafeTensors.read(ADAPTER.resolve("adapter_model.safetensors"))) {
            long elements = 0;
            for (String name : saved.names()) {
                try (Tensor t = saved.get(name)) {
                    elements += t.numel();
                }
            }
            assertEquals(elements, trainable.trainableParameterCount());
        }
    }
}
