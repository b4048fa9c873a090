package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;

/** An adapter added to the golden llama, saved, and loaded into a fresh base model on the golden batch. */
final class GoldenRoundTrip {
    static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    private GoldenRoundTrip() {}

    /**
     * The base model's logits, the adapted model's, and the adapter config as loaded back; fails unless the loaded
     * adapter gives the adapted logits.
     */
    record Result(float[] base, float[] adapted, JsonNode loadedConfig) {}

    static Result saveAndLoad(AdapterConfig config, Path dir) throws Exception {
        try (NamedTensors io = SafeTensors.read(TestFiles.golden().resolve("cases/lora_llama_all/io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask")) {
            float[] base;
            float[] adapted;
            try (BaseModel model = BaseModel.load(LLAMA);
                    Tensor baseLogits = model.forward(ids, mask);
                    PeftModel peft = PeftModel.create(model, "default", config);
                    Tensor logits = peft.forward(ids, mask)) {
                base = baseLogits.toFloatArray();
                adapted = logits.toFloatArray();
                peft.save(dir);
            }
            try (BaseModel model = BaseModel.load(LLAMA);
                    PeftModel loaded = PeftModel.load(model, dir);
                    Tensor logits = loaded.forward(ids, mask)) {
                float[] after = logits.toFloatArray();
                for (int i = 0; i < after.length; i++) {
                    assertEquals(adapted[i], after[i], 1e-5f);
                }
                return new Result(base, adapted, new ObjectMapper().readTree(loaded.adapterConfig("default")));
            }
        }
    }
}
