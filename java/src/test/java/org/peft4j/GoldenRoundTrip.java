package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import org.peft4j.config.AdapterConfig;

/** An adapter added to a golden base model, saved, and loaded into a fresh base model on the golden batch. */
final class GoldenRoundTrip {
    static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    private GoldenRoundTrip() {}

    /**
     * The base model's logits, the adapted model's, and the adapter config as loaded back; fails unless the loaded
     * adapter gives the adapted logits.
     */
    record Result(float[] base, float[] adapted, JsonNode loadedConfig) {}

    static Result saveAndLoad(AdapterConfig config, Path dir) throws Exception {
        return saveAndLoad("llama", config, dir);
    }

    /** As {@link #saveAndLoad(AdapterConfig, Path)} on the golden model of `arch` ("llama" or "gpt2"). */
    static Result saveAndLoad(String arch, AdapterConfig config, Path dir) throws Exception {
        Path modelDir = TestFiles.golden().resolve("models/" + arch);
        String ioCase = arch.equals("llama") ? "lora_llama_all" : "lora_" + arch;
        try (NamedTensors io = SafeTensors.read(TestFiles.golden().resolve("cases/" + ioCase + "/io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask")) {
            float[] base;
            float[] adapted;
            try (BaseModel model = BaseModel.load(modelDir);
                    Tensor baseLogits = model.forward(ids, mask);
                    PeftModel peft = PeftModel.create(model, "default", config);
                    Tensor logits = peft.forward(ids, mask)) {
                base = baseLogits.toFloatArray();
                adapted = logits.toFloatArray();
                peft.save(dir);
            }
            try (BaseModel model = BaseModel.load(modelDir);
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
