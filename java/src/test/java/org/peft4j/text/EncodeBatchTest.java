package org.peft4j.text;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.peft4j.BaseModel;
import org.peft4j.ModelInput;
import org.peft4j.PeftException;
import org.peft4j.Tensor;

/** Tokenizer.encodeBatch: transformers' padded batch encoding, and what the demo model computes from it. */
class EncodeBatchTest {
    private static final List<String> TEXTS = List.of("Where does Mira live?", "Hi", "The capital of Velmora is");

    private static Path demoModel() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().resolve("demo/model");
    }

    @Test
    void padsEachRowOnTheChosenSideWithTheMaskMarkingTheTokens() {
        try (HfTokenizer tokenizer = HfTokenizer.load(demoModel())) {
            long pad = tokenizer.padTokenId().getAsLong();
            long[][] rows = TEXTS.stream().map(t -> tokenizer.encode(t, true)).toArray(long[][]::new);
            int longest = Arrays.stream(rows).mapToInt(r -> r.length).max().getAsInt();
            for (PaddingSide side : PaddingSide.values()) {
                try (ModelInput batch = tokenizer.encodeBatch(TEXTS, true, side)) {
                    assertArrayEquals(new long[] {TEXTS.size(), longest}, batch.inputIds().shape());
                    long[] ids = batch.inputIds().toLongArray();
                    long[] mask = batch.attentionMask().orElseThrow().toLongArray();
                    for (int i = 0; i < rows.length; i++) {
                        int padding = longest - rows[i].length;
                        int start = side == PaddingSide.LEFT ? padding : 0;
                        for (int j = 0; j < longest; j++) {
                            boolean token = j >= start && j < start + rows[i].length;
                            assertEquals(token ? rows[i][j - start] : pad, ids[i * longest + j], side + " row " + i);
                            assertEquals(token ? 1 : 0, mask[i * longest + j], side + " mask row " + i);
                        }
                    }
                }
            }
        }
    }

    @Test
    void rightPaddedRowsGiveEachTextsOwnLogits() {
        try (HfTokenizer tokenizer = HfTokenizer.load(demoModel());
                BaseModel model = BaseModel.load(demoModel());
                ModelInput batch = tokenizer.encodeBatch(TEXTS, true, PaddingSide.RIGHT);
                Tensor logits = model.forward(batch.inputIds(), batch.attentionMask().orElseThrow())) {
            long[] shape = logits.shape();
            int length = (int) shape[1];
            int vocab = (int) shape[2];
            float[] all = logits.toFloatArray();
            for (int i = 0; i < TEXTS.size(); i++) {
                long[] ids = tokenizer.encode(TEXTS.get(i), true);
                try (Tensor alone = Tensor.of(ids, 1, ids.length); Tensor want = model.forward(alone, null)) {
                    float[] expected = want.toFloatArray();
                    float[] got = Arrays.copyOfRange(all, i * length * vocab, i * length * vocab + ids.length * vocab);
                    assertArrayEquals(expected, got, 1e-4f, "row " + i);
                }
            }
        }
    }

    @Test
    void emptyBatchesAndTextsWithoutTokensAreNamed() {
        try (HfTokenizer tokenizer = HfTokenizer.load(demoModel())) {
            PeftException none = assertThrows(PeftException.class,
                    () -> tokenizer.encodeBatch(List.of(), false, PaddingSide.RIGHT));
            assertEquals("texts is empty: a batch needs a text", none.getMessage());
            PeftException empty = assertThrows(PeftException.class,
                    () -> tokenizer.encodeBatch(List.of("Hi", ""), false, PaddingSide.LEFT));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, empty.kind());
            assertEquals("texts[1] encodes to no tokens: every row of a batch needs at least one", empty.getMessage());
        }
    }
}
