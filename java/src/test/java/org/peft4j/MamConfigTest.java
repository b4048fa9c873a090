package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.BottleneckConfig;
import org.peft4j.config.MamConfig;
import org.peft4j.config.PrefixTuningConfig;

/**
 * MamConfig on the golden llama (hidden d = 64, L = 2 layers, 2 key/value heads of 16, so prefixes of width T = 32):
 * the trainable count is the prefix encoder's plus the parallel adapters', and the config survives save and load.
 */
class MamConfigTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final int D = 64;
    private static final int L = 2;
    private static final int T = 32;

    /** Prefix with projection: embedding V·T, Linear(T, H), Linear(H, 2·L·T). */
    private static long prefix(int v, int h) {
        return (long) v * T + (T * h + h) + ((long) h * 2 * L * T + 2 * L * T);
    }

    /** One parallel adapter of width m: down and up with biases. */
    private static long adapter(int m) {
        return 2L * D * m + m + D;
    }

    private static MamConfig config() {
        return MamConfig.builder()
                .prefixTuning(PrefixTuningConfig.builder().numVirtualTokens(5).prefixProjection(true)
                        .encoderHiddenSize(24).build())
                .ffnAdapter(BottleneckConfig.parallel().reductionFactor(4).build())
                .build();
    }

    @Test
    void trainableCountIsPrefixPlusParallelAdapters() {
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = PeftModel.create(base, "default", config())) {
            assertEquals(prefix(5, 24) + L * adapter(D / 4), model.trainableParameterCount());
        }
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default", MamConfig.builder().build())) {
            assertEquals(prefix(30, 800) + L * adapter(D / 2), model.trainableParameterCount());
        }
    }

    @Test
    void configAndLogitsRoundTripThroughSaveAndLoad(@TempDir Path dir) throws Exception {
        JsonNode json = GoldenRoundTrip.saveAndLoad(config(), dir).loadedConfig();
        assertEquals("MAM", json.get("peft_type").asText());
        assertEquals(5, json.get("prefix_tuning").get("num_virtual_tokens").asInt());
        assertEquals(24, json.get("prefix_tuning").get("encoder_hidden_size").asInt());
        assertEquals(4.0, json.get("ffn_adapter").get("reduction_factor").asDouble());
        assertEquals(4.0, json.get("ffn_adapter").get("scaling").asDouble());
    }

    @Test
    void aSequentialFfnAdapterIsRefusedByName() {
        try (BaseModel base = BaseModel.load(LLAMA)) {
            MamConfig houlsby = MamConfig.builder().ffnAdapter(BottleneckConfig.houlsby().build()).build();
            PeftException e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", houlsby));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind());
            assertTrue(e.getMessage().contains("ffn_adapter.mh_adapter"), e.getMessage());
        }
    }
}
