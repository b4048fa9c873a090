package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.peft4j.config.AdapterBiasConfig;
import org.peft4j.config.AdapterFusionConfig;
import org.peft4j.config.BitFitConfig;
import org.peft4j.config.BottleneckConfig;
import org.peft4j.config.CompacterConfig;
import org.peft4j.config.LayerFreezingConfig;
import org.peft4j.config.TunerConfig;

/**
 * The configs of the methods HF PEFT lacks (bottleneck adapters, Compacter, AdapterBias, BitFit, layer freezing), each
 * added to a golden base model through PeftModel: the trainable count equals the literature's formula on the model's
 * known sizes (hidden d = 64, L = 2 layers, FFN 128, 2 of 4 heads for keys/values of width 16), and a new adapter
 * leaves the logits equal to the base model's.
 */
class AdapterFamilyConfigsTest {
    private static final int D = 64;
    private static final int L = 2;

    /** Down and up projections with their biases, for bottleneck width m. */
    private static long bottleneck(int m) {
        return 2L * D * m + m + D;
    }

    static Stream<Arguments> configs() {
        long llamaLayer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64;
        // BERT: per layer query/key/value/attention output (4·64), two LayerNorms (2·64), intermediate (128), output
        // (64); embeddings LayerNorm and pooler (2·64); the classifier head trained whole (64·3 + 3)
        long bertBitFit = L * (4 * 64 + 2 * 64 + 128 + 64) + 2 * 64 + 64 * 3 + 3;
        return Stream.of(
                Arguments.of("llama", BottleneckConfig.houlsby().build(), L * 2 * bottleneck(D / 16)),
                Arguments.of("llama", BottleneckConfig.pfeiffer().build(), L * bottleneck(D / 16)),
                Arguments.of("bert", BottleneckConfig.pfeiffer().originalLnBefore(true).build(), L * bottleneck(D / 16)),
                Arguments.of("llama", BottleneckConfig.houlsby().leaveOut(0).build(), (L - 1) * 2 * bottleneck(D / 16)),
                Arguments.of("llama", BottleneckConfig.parallel().build(), L * bottleneck(D / 2)),
                Arguments.of("llama", BottleneckConfig.scaledParallel().build(), L * (bottleneck(D / 2) + 1)),
                // Compacter++ at reduction 8: per PHM layer in + out slow weights + out biases, one 4×4×4 rule
                Arguments.of("llama", CompacterConfig.compacterPlusPlus().reductionFactor(8).build(),
                        L * (2 * (D + 8) + (D + 8)) + 64),
                Arguments.of("llama", AdapterBiasConfig.builder().build(), (long) L * 2 * D),
                Arguments.of("bert", BitFitConfig.builder().build(), bertBitFit),
                Arguments.of("llama", LayerFreezingConfig.topLayers(1), llamaLayer));
    }

    private static Path caseOf(String arch) {
        return TestFiles.golden().resolve("cases").resolve(arch.equals("bert") ? "lora_bert_seqcls" : "lora_llama_all");
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("configs")
    void countsMatchTheFormulaAndANewAdapterIsTheIdentity(String arch, TunerConfig config, long expected) {
        try (NamedTensors io = SafeTensors.read(caseOf(arch).resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                BaseModel base = BaseModel.load(TestFiles.golden().resolve("models").resolve(arch))) {
            float[] before;
            try (Tensor logits = base.forward(ids, mask)) {
                before = logits.toFloatArray();
            }
            try (PeftModel model = PeftModel.create(base, "default", config)) {
                assertEquals(expected, model.trainableParameterCount(), config.toJson());
                try (Tensor logits = model.forward(ids, mask)) {
                    float[] after = logits.toFloatArray();
                    for (int i = 0; i < after.length; i++) {
                        assertEquals(before[i], after[i], 1e-5f, config.toJson());
                    }
                }
            }
        }
    }

    @Test
    void aFusionTrainsOnlyItsQueryKeyAndValue() {
        try (BaseModel base = BaseModel.load(TestFiles.golden().resolve("models/llama"));
                PeftModel model = PeftModel.create(base, "a", BottleneckConfig.pfeiffer().build())) {
            model.addAdapter("b", BottleneckConfig.pfeiffer().build());
            model.addAdapter("fusion", AdapterFusionConfig.of("a", "b").build());
            model.setAdapter("fusion");
            assertEquals((long) L * (3 * D * D + 2 * D), model.trainableParameterCount());
        }
    }

    @Test
    void anOptionTheModelCannotHonourIsRefusedByName() {
        try (BaseModel base = BaseModel.load(TestFiles.golden().resolve("models/bert"))) {
            PeftException e = assertThrows(PeftException.class,
                    () -> PeftModel.create(base, "default", BottleneckConfig.parallel().build()));
            assertTrue(e.getMessage().contains("parallel"), e.getMessage());
        }
    }
}
