package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.BottleneckConfig;
import org.peft4j.config.LoraConfig;
import org.peft4j.config.PrefixTuningConfig;
import org.peft4j.config.UniPeltConfig;

/**
 * UniPeltConfig on the golden llama (hidden d = 64, L = 2 layers, 4 query and 2 key/value heads of 16: q_proj 64 to
 * 64, v_proj 64 to 32, prefixes of width T = 32): the trainable count is the sum of the three gated parts, and the
 * config survives save and load.
 */
class UniPeltConfigTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final int D = 64;
    private static final int L = 2;
    private static final int T = 32;

    /** Prefix with projection (embedding V·T, Linear(T, H), Linear(H, 2·L·T)) and g gates Linear(d, 1) per layer. */
    private static long prefix(int v, int h, int gates) {
        return (long) v * T + (T * h + h) + ((long) h * 2 * L * T + 2 * L * T) + (long) L * gates * (D + 1);
    }

    /** LoRA of rank r on q_proj and v_proj, each with its gate Linear(in, 1). */
    private static long lora(int r) {
        return L * ((long) r * (D + 64) + D + 1 + (long) r * (D + 32) + D + 1);
    }

    /** A bottleneck of width m after the FFN with its gate Linear(d, 1). */
    private static long adapter(int m) {
        return L * (2L * D * m + m + D + D + 1);
    }

    private static UniPeltConfig config() {
        return UniPeltConfig.builder()
                .prefixTuning(PrefixTuningConfig.builder().numVirtualTokens(5).prefixProjection(true)
                        .encoderHiddenSize(24).build())
                .sharedGating(false)
                .adapter(BottleneckConfig.pfeiffer().reductionFactor(8).build())
                .lora(LoraConfig.builder().r(4).targetModules("q_proj", "v_proj").build())
                .build();
    }

    @Test
    void trainableCountIsTheSumOfTheGatedParts() {
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = PeftModel.create(base, "default", config())) {
            assertEquals(prefix(5, 24, 2) + lora(4) + adapter(D / 8), model.trainableParameterCount());
        }
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default", UniPeltConfig.builder().build())) {
            assertEquals(prefix(10, 512, 1) + lora(8) + adapter(D / 16), model.trainableParameterCount());
        }
    }

    @Test
    void configAndLogitsRoundTripThroughSaveAndLoad(@TempDir Path dir) throws Exception {
        JsonNode json = GoldenRoundTrip.saveAndLoad(config(), dir).loadedConfig();
        assertEquals("UNIPELT", json.get("peft_type").asText());
        assertEquals(5, json.get("prefix_tuning").get("num_virtual_tokens").asInt());
        assertEquals(false, json.get("prefix_tuning").get("shared_gating").asBoolean());
        assertEquals(8.0, json.get("adapter").get("reduction_factor").asDouble());
        assertEquals(true, json.get("adapter").get("use_gating").asBoolean());
        assertEquals(4, json.get("lora").get("r").asInt());
        assertTrue(json.get("lora").get("lora_alpha") == null, json.toString());
    }

    @Test
    void loraAlphaIsRefusedByName() {
        try (BaseModel base = BaseModel.load(LLAMA)) {
            UniPeltConfig scaled = UniPeltConfig.builder()
                    .lora(LoraConfig.builder().loraAlpha(16).targetModules("q_proj").build()).build();
            PeftException e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", scaled));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind());
            assertTrue(e.getMessage().contains("lora.lora_alpha"), e.getMessage());
        }
    }
}
