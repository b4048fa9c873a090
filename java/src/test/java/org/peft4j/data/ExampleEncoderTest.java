package org.peft4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.OptionalLong;
import org.junit.jupiter.api.Test;
import org.peft4j.text.Tokenizer;

class ExampleEncoderTest {
    private static final long BOS = 1;
    private static final long EOS = 2;
    private static final long X = -100;

    /** One id per character (its code point), bos first when asked: the expected ids can be written by hand. */
    private static final class CharTokenizer implements Tokenizer {
        @Override
        public long[] encode(String text, boolean addSpecialTokens) {
            long[] chars = text.chars().asLongStream().toArray();
            if (!addSpecialTokens) {
                return chars;
            }
            long[] ids = new long[chars.length + 1];
            ids[0] = BOS;
            System.arraycopy(chars, 0, ids, 1, chars.length);
            return ids;
        }

        @Override
        public String decode(long[] ids, boolean skipSpecialTokens) {
            StringBuilder text = new StringBuilder();
            for (long id : ids) {
                text.appendCodePoint((int) id);
            }
            return text.toString();
        }

        @Override
        public long vocabSize() {
            return 128;
        }

        @Override
        public OptionalLong bosTokenId() {
            return OptionalLong.of(BOS);
        }

        @Override
        public OptionalLong eosTokenId() {
            return OptionalLong.of(EOS);
        }

        @Override
        public OptionalLong padTokenId() {
            return OptionalLong.empty();
        }

        @Override
        public void close() {}
    }

    private final ExampleEncoder encoder = new ExampleEncoder(new CharTokenizer(), null);

    @Test
    void textLearnsEveryTokenAndTheEos() {
        Example.Sequence s = (Example.Sequence) encoder.encode(new DataRecord.Text("f:1", "ab"));
        assertArrayEquals(new long[] {BOS, 'a', 'b', EOS}, s.inputIds());
        // bos is never a target (the model shifts), so its label is not learned either way; HF keeps it as the id
        assertArrayEquals(new long[] {BOS, 'a', 'b', EOS}, s.labels());
    }

    @Test
    void promptCompletionMasksThePrompt() {
        Example.Sequence s = (Example.Sequence) encoder.encode(new DataRecord.PromptCompletion("f:1", "Q:", " A"));
        assertArrayEquals(new long[] {BOS, 'Q', ':', ' ', 'A', EOS}, s.inputIds());
        assertArrayEquals(new long[] {X, X, X, ' ', 'A', EOS}, s.labels());
        assertArrayEquals(new long[] {BOS, 'Q', ':'}, encoder.promptIds(new DataRecord.PromptCompletion("f:1", "Q:", " A")));
    }

    @Test
    void chatLearnsOnlyAssistantTurns() {
        DataRecord.Chat chat = new DataRecord.Chat("f:1", List.of(new ChatMessage("user", "hi"),
                new ChatMessage("assistant", "yo"), new ChatMessage("user", "?"), new ChatMessage("assistant", "!")));
        Example.Sequence s = (Example.Sequence) encoder.encode(chat);
        String rendered = "<|user|>\nhi\n<|assistant|>\nyo\u0002<|user|>\n?\n<|assistant|>\n!\u0002";
        long[] expectedIds = new long[rendered.length() + 1];
        long[] expectedLabels = new long[rendered.length() + 1];
        expectedIds[0] = BOS;
        expectedLabels[0] = X;
        for (int i = 0; i < rendered.length(); i++) {
            expectedIds[i + 1] = rendered.charAt(i);
            expectedLabels[i + 1] = X;
        }
        for (String learned : List.of("yo\u0002", "!\u0002")) {
            int at = rendered.indexOf(learned) + 1;
            for (int i = 0; i < learned.length(); i++) {
                expectedLabels[at + i] = learned.charAt(i);
            }
        }
        assertArrayEquals(expectedIds, s.inputIds());
        assertArrayEquals(expectedLabels, s.labels());
        // The prompt for the last answer: everything before it, then the assistant header.
        String prompt = "<|user|>\nhi\n<|assistant|>\nyo\u0002<|user|>\n?\n<|assistant|>\n";
        assertEquals(prompt, new CharTokenizer().decode(encoder.promptIds(chat), false).substring(1));
        assertEquals("!", ExampleEncoder.reference(chat));
    }

    @Test
    void labeledTextsGetTheirClassIds() {
        List<DataRecord> records = List.of(new DataRecord.Labeled("f:1", "ok", "pos"),
                new DataRecord.Labeled("f:2", "no", "neg"));
        ExampleEncoder classifier = new ExampleEncoder(new CharTokenizer(), LabelSet.from(records));
        Example.Classified c = (Example.Classified) classifier.encode(records.get(1));
        assertArrayEquals(new long[] {BOS, 'n', 'o'}, c.inputIds());
        assertEquals(0, c.label());
    }
}
