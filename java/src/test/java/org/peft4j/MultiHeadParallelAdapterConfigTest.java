package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.MultiHeadParallelAdapterConfig;

/**
 * MultiHeadParallelAdapterConfig on the golden llama (hidden d = 64, L = 2 layers, H = 4 query heads of 16): the
 * trainable count is H·(d·r + r) + H·(r·16 + 16) per adapted layer, the saved keys sit under each attention's
 * {@code mh_adapters}, and the config and logits survive save and load.
 */
class MultiHeadParallelAdapterConfigTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final int D = 64;
    private static final int L = 2;
    private static final int HEADS = 4;
    private static final int HEAD_DIM = 16;

    private static long perLayer(int r) {
        return HEADS * ((long) D * r + r) + HEADS * ((long) r * HEAD_DIM + HEAD_DIM);
    }

    @Test
    void trainableCountFollowsTheFormula() {
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default", MultiHeadParallelAdapterConfig.builder().build())) {
            assertEquals(L * perLayer(8), model.trainableParameterCount());
        }
        MultiHeadParallelAdapterConfig config =
                MultiHeadParallelAdapterConfig.builder().bottleneckSize(3).learnedScaling().leaveOut(0).build();
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = PeftModel.create(base, "default", config)) {
            assertEquals((L - 1) * (perLayer(3) + 1), model.trainableParameterCount());
        }
    }

    @Test
    void fieldsKeysAndLogitsRoundTripThroughSaveAndLoad(@TempDir Path dir) throws Exception {
        MultiHeadParallelAdapterConfig config = MultiHeadParallelAdapterConfig.builder().bottleneckSize(3)
                .nonLinearity("gelu").scaling(2.0).initWeights("bert").leaveOut(0).build();
        GoldenRoundTrip.Result result = GoldenRoundTrip.saveAndLoad(config, dir);
        boolean differs = false;
        for (int i = 0; i < result.adapted().length; i++) {
            differs |= Math.abs(result.adapted()[i] - result.base()[i]) > 1e-4f;
        }
        assertTrue(differs, "bert initialisation is not the identity");
        String prefix = "base_model.model.model.layers.1.self_attn.mh_adapters.";
        try (NamedTensors tensors = SafeTensors.read(dir.resolve("adapter_model.safetensors"))) {
            assertEquals(List.of(prefix + "adapter_down.bias", prefix + "adapter_down.weight",
                    prefix + "adapter_up.bias", prefix + "adapter_up.weight"), tensors.names().stream().sorted().toList());
        }
        JsonNode json = result.loadedConfig();
        assertEquals("MH_PARALLEL_ADAPTER", json.get("peft_type").asText());
        assertEquals(3, json.get("bottleneck_size").asInt());
        assertEquals("gelu", json.get("non_linearity").asText());
        assertEquals(2.0, json.get("scaling").asDouble());
        assertEquals("bert", json.get("init_weights").asText());
        assertEquals(0, json.get("leave_out").get(0).asInt());
        // dropout acts in training only, so it is checked in the config the core keeps.
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default",
                        MultiHeadParallelAdapterConfig.builder().dropout(0.1).build())) {
            assertEquals(0.1, new ObjectMapper().readTree(model.adapterConfig("default")).get("dropout").asDouble());
        }
    }

    @Test
    void valuesTheCoreRefusesNameTheirField() {
        try (BaseModel base = BaseModel.load(LLAMA)) {
            MultiHeadParallelAdapterConfig houlsby = MultiHeadParallelAdapterConfig.builder().initWeights("houlsby").build();
            PeftException e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", houlsby));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind());
            assertTrue(e.getMessage().contains("init_weights"), e.getMessage());
            MultiHeadParallelAdapterConfig all = MultiHeadParallelAdapterConfig.builder().leaveOut(0, 1).build();
            e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", all));
            assertTrue(e.getMessage().contains("leave_out"), e.getMessage());
        }
        assertThrows(PeftException.class, () -> MultiHeadParallelAdapterConfig.builder().bottleneckSize(0));
    }
}
