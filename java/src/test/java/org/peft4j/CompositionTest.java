package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.peft4j.config.AdapterAverageConfig;
import org.peft4j.config.BottleneckConfig;

/**
 * The Average and Parallel blocks through the Java API on the golden llama, with two bottleneck adapters initialised
 * away from the identity ({@code init_weights} "bert"), against each adapter run alone.
 */
class CompositionTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final Path IO = TestFiles.golden().resolve("cases/lora_llama_all/io.safetensors");

    private static PeftModel twoAdapters(BaseModel base) {
        PeftModel model = PeftModel.create(base, "a", BottleneckConfig.pfeiffer().initWeights("bert").build());
        model.addAdapter("b", BottleneckConfig.pfeiffer().initWeights("bert").build());
        return model;
    }

    private static float[] logitsOf(PeftModel model, String adapter, Tensor ids, Tensor mask) {
        model.setAdapter(adapter);
        try (Tensor logits = model.forward(ids, mask)) {
            return logits.toFloatArray();
        }
    }

    private static void assertClose(float[] want, float[] got) {
        assertEquals(want.length, got.length);
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i], got[i], 1e-5f, "element " + i);
        }
    }

    @Test
    void parallelRowsEqualEachAdapterAlone() {
        try (NamedTensors io = SafeTensors.read(IO);
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = twoAdapters(base)) {
            float[] a = logitsOf(model, "a", ids, mask);
            float[] b = logitsOf(model, "b", ids, mask);
            try (Tensor both = model.forwardParallel(List.of("a", "b"), ids, mask)) {
                assertEquals(2 * ids.shape()[0], both.shape()[0]);
                float[] all = both.toFloatArray();
                assertClose(a, Arrays.copyOfRange(all, 0, a.length));
                assertClose(b, Arrays.copyOfRange(all, a.length, all.length));
            }
            PeftException e = assertThrows(PeftException.class,
                    () -> model.forwardParallel(List.of("a", "nope"), ids, mask));
            assertEquals(PeftException.Kind.NOT_FOUND, e.kind());
        }
    }

    @Test
    void averageWithAllWeightOnOneAdapterIsThatAdapter() {
        try (NamedTensors io = SafeTensors.read(IO);
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = twoAdapters(base)) {
            float[] b = logitsOf(model, "b", ids, mask);
            model.addAdapter("avg", AdapterAverageConfig.of("a", "b").weights(0, 2).build());
            model.setAdapter("avg");
            assertEquals(0, model.trainableParameterCount());
            assertClose(b, logitsOf(model, "avg", ids, mask));
            model.addAdapter("even", AdapterAverageConfig.of("a", "b").build());
            float[] even = logitsOf(model, "even", ids, mask);
            assertThrows(AssertionError.class, () -> assertArrayEquals(b, even));
        }
    }
}
