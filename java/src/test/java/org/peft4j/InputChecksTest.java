package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.peft4j.config.LoraConfig;

/**
 * Inputs the Java API refuses before any work, each with a message naming the input and the problem: token ids
 * outside the vocabulary, empty or one-dimensional sequences, attention masks holding values other than 0 and 1, a
 * second PeftModel over a base that already carries one.
 */
class InputChecksTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");
    private static final Path T5 = TestFiles.golden().resolve("models/t5");
    private static final GenerationConfig GREEDY = GenerationConfig.builder().maxNewTokens(2).build();

    private static void assertRefused(String message, Supplier<Tensor> call) {
        PeftException e = assertThrows(PeftException.class, () -> call.get().close());
        assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind(), e.getMessage());
        assertEquals(message, e.getMessage());
    }

    @Test
    void tokenIdsOutsideTheVocabularyAndEmptySequencesAreNamed() {
        try (BaseModel llama = BaseModel.load(LLAMA);
                PeftModel peft = PeftModel.create(llama, "default",
                        LoraConfig.builder().r(2).targetModules("q_proj").build());
                Tensor tooLarge = Tensor.of(new long[] {1, 2, 3, 256}, 2, 2);
                Tensor negative = Tensor.of(new int[] {5, -1, 7}, 1, 3);
                Tensor empty = Tensor.of(new long[0], 1, 0);
                Tensor noRows = Tensor.of(new long[0], 0, 4);
                Tensor flat = Tensor.of(new long[] {1, 2, 3}, 3)) {
            Map<String, Tensor> cases = new LinkedHashMap<>();
            cases.put("input_ids holds 256 at [1, 1]: token ids must lie in [0, 256), the model's vocab_size", tooLarge);
            cases.put("input_ids holds -1 at [0, 1]: token ids must lie in [0, 256), the model's vocab_size", negative);
            cases.put("input_ids is empty (shape [1, 0]): every row needs at least one token", empty);
            cases.put("input_ids is empty (shape [0, 4]): every row needs at least one token", noRows);
            cases.put("input_ids must have shape [batch, length], got [3]", flat);
            cases.forEach((message, ids) -> {
                assertRefused(message, () -> llama.forward(ids, null));
                assertRefused(message, () -> peft.forward(ids, null));
                assertRefused(message, () -> peft.generate(ids, null, GREEDY));
                assertRefused(message, () -> peft.loss(ids, null, ids));
                assertRefused(message, () -> peft.forwardParallel(List.of("default"), ids, null));
            });
        }
    }

    @Test
    void decoderTokenIdsAreCheckedToo() {
        try (BaseModel t5 = BaseModel.load(T5);
                Tensor ids = Tensor.of(new long[] {4, 5, 6}, 1, 3);
                Tensor decoderIds = Tensor.of(new long[] {0, 300}, 1, 2)) {
            PeftException e = assertThrows(PeftException.class,
                    () -> t5.forward(ModelInput.builder().inputIds(ids).decoderInputIds(decoderIds).build()));
            assertEquals("decoder_input_ids holds 300 at [0, 1]: token ids must lie in [0, 256), the model's "
                    + "vocab_size", e.getMessage());
        }
    }

    @Test
    void floatAttentionMasksOfZerosAndOnesActAsIntegerMasks() {
        try (BaseModel llama = BaseModel.load(LLAMA);
                Tensor ids = Tensor.of(new long[] {0, 0, 17, 40, 3, 9, 12, 5}, 2, 4);
                Tensor longMask = Tensor.of(new long[] {0, 0, 1, 1, 1, 1, 1, 1}, 2, 4);
                Tensor floatMask = Tensor.of(new float[] {0, 0, 1, 1, 1, 1, 1, 1}, 2, 4);
                Tensor doubleMask = Tensor.of(new double[] {0, 0, 1, 1, 1, 1, 1, 1}, 2, 4);
                Tensor boolMask = Tensor.of(new byte[] {0, 0, 1, 1, 1, 1, 1, 1}, DType.BOOL, 2, 4);
                Tensor want = llama.forward(ids, longMask);
                Tensor unmasked = llama.forward(ids, null)) {
            for (Tensor mask : new Tensor[] {floatMask, doubleMask, boolMask}) {
                try (Tensor got = llama.forward(ids, mask)) {
                    assertArrayEquals(want.toFloatArray(), got.toFloatArray(), 0f, mask.dtype().toString());
                }
            }
            // The padding of row 0 matters: the masks above did act.
            assertFalse(Arrays.equals(want.toFloatArray(), unmasked.toFloatArray()));
        }
    }

    @Test
    void attentionMaskValuesOtherThanZeroAndOneAreNamed() {
        try (BaseModel llama = BaseModel.load(LLAMA);
                Tensor ids = Tensor.of(new long[] {1, 2, 3}, 1, 3);
                Tensor half = Tensor.of(new float[] {1, 0.5f, 1}, 1, 3);
                Tensor two = Tensor.of(new long[] {1, 1, 2}, 1, 3);
                Tensor nan = Tensor.of(new float[] {Float.NaN, 1, 1}, 1, 3)) {
            String rule = ": a mask holds only 0 (padding) and 1 (token)";
            assertRefused("attention_mask holds 0.5 at [0, 1]" + rule, () -> llama.forward(ids, half));
            assertRefused("attention_mask holds 2 at [0, 2]" + rule, () -> llama.forward(ids, two));
            assertRefused("attention_mask holds nan at [0, 0]" + rule, () -> llama.forward(ids, nan));
            assertRefused("attention_mask holds 0.5 at [0, 1]" + rule, () -> llama.generate(ids, half, GREEDY));
        }
    }

    @Test
    void aSecondPeftModelOnOneBaseIsRefusedUntilTheFirstIsUnloaded() {
        LoraConfig lora = LoraConfig.builder().r(2).targetModules("q_proj").build();
        Path adapter = TestFiles.golden().resolve("cases/lora_llama_all/adapter");
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel first = PeftModel.create(base, "default", lora)) {
            String refusal = "the base model already carries a PeftModel (adapters 'default'), which adapted it in "
                    + "place: add further adapters to that PeftModel, or load the base model again";
            PeftException created = assertThrows(PeftException.class, () -> PeftModel.create(base, "other", lora));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, created.kind());
            assertEquals(refusal, created.getMessage());
            PeftException loaded = assertThrows(PeftException.class, () -> PeftModel.load(base, adapter));
            assertEquals(refusal, loaded.getMessage());
            // What the refusal points to works: the first PeftModel takes a second adapter.
            first.addAdapter("other", lora);
            assertEquals(List.of("default", "other"), first.adapterNames());
            // Closing the first leaves its layers in the base: still refused.
            first.close();
            PeftException afterClose = assertThrows(PeftException.class, () -> PeftModel.create(base, "x", lora));
            assertEquals("the base model already carries a PeftModel (adapters 'default', 'other'), which adapted it "
                    + "in place: add further adapters to that PeftModel, or load the base model again",
                    afterClose.getMessage());
        }
        try (BaseModel base = BaseModel.load(LLAMA)) {
            try (PeftModel first = PeftModel.create(base, "default", lora); BaseModel plain = first.mergeAndUnload()) {
                // Unloaded, the base is plain again and takes a new PeftModel.
                try (PeftModel second = PeftModel.load(base, adapter)) {
                    assertEquals(List.of("default"), second.adapterNames());
                }
            }
        }
    }
}
