package org.peft4j.data;

import java.util.ArrayList;
import java.util.List;
import org.peft4j.PeftException;
import org.peft4j.text.Tokenizer;

/**
 * Tokenizes records as TRL's SFT trainer prepares them: the tokenizer's special tokens (bos) first, eos appended
 * after a text, a completion or an assistant message, and labels -100 on what is only context (the prompt, the
 * chat's headers and non-assistant turns). Classification texts get the special tokens and no eos.
 */
public final class ExampleEncoder {
    public static final long IGNORE = -100;

    private final Tokenizer tokenizer;
    private final LabelSet labels;

    /** {@code labels} may be null when no record is a classification record. */
    public ExampleEncoder(Tokenizer tokenizer, LabelSet labels) {
        this.tokenizer = tokenizer;
        this.labels = labels;
    }

    public List<Example> encode(List<DataRecord> records) {
        List<Example> examples = new ArrayList<>(records.size());
        for (DataRecord record : records) {
            examples.add(encode(record));
        }
        return examples;
    }

    public Example encode(DataRecord record) {
        if (record instanceof DataRecord.Labeled labeled) {
            if (labels == null) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, labeled.source() + ": no label set given");
            }
            return new Example.Classified(tokenizer.encode(labeled.text(), true),
                    labels.id(labeled.label(), labeled.source()));
        }
        Builder sequence = new Builder(record.source());
        if (record instanceof DataRecord.Text text) {
            sequence.add(text.text(), true);
            sequence.addEos();
        } else if (record instanceof DataRecord.PromptCompletion pc) {
            sequence.add(pc.prompt(), false);
            sequence.add(pc.completion(), true);
            sequence.addEos();
        } else if (record instanceof DataRecord.Chat chat) {
            addChat(sequence, chat.messages());
        }
        return sequence.build();
    }

    private void addChat(Builder sequence, List<ChatMessage> messages) {
        for (ChatMessage message : messages) {
            sequence.add(ChatTemplate.header(message.role()), false);
            if (message.role().equals("assistant")) {
                sequence.add(message.content(), true);
                sequence.addEos();
            } else {
                sequence.add(message.content() + "\n", false);
            }
        }
    }

    /** The ids that prompt the model for the next assistant message after {@code messages}, as training renders them. */
    public long[] chatPrompt(List<ChatMessage> messages) {
        Builder sequence = new Builder("chat prompt");
        addChat(sequence, messages);
        sequence.add(ChatTemplate.header("assistant"), false);
        return sequence.build().inputIds();
    }

    /** The ids of a prompt for generation: the special tokens, then the prompt's (or the chat's) tokens. */
    public long[] promptIds(DataRecord record) {
        if (record instanceof DataRecord.PromptCompletion pc) {
            return tokenizer.encode(pc.prompt(), true);
        }
        if (record instanceof DataRecord.Chat chat) {
            List<ChatMessage> context = chat.messages();
            int last = context.size() - 1;
            while (last >= 0 && !context.get(last).role().equals("assistant")) {
                last--;
            }
            return chatPrompt(context.subList(0, last));
        }
        throw new PeftException(PeftException.Kind.UNSUPPORTED, record.source()
                + ": exact match needs prompt/completion or messages records");
    }

    /** What generation should produce for {@code record}: the completion, or the chat's last assistant message. */
    public static String reference(DataRecord record) {
        if (record instanceof DataRecord.PromptCompletion pc) {
            return pc.completion();
        }
        if (record instanceof DataRecord.Chat chat) {
            List<ChatMessage> messages = chat.messages();
            for (int i = messages.size() - 1; i >= 0; i--) {
                if (messages.get(i).role().equals("assistant")) {
                    return messages.get(i).content();
                }
            }
        }
        throw new PeftException(PeftException.Kind.UNSUPPORTED, record.source()
                + ": exact match needs prompt/completion or messages records");
    }

    private final class Builder {
        private final String source;
        private final List<long[]> ids = new ArrayList<>();
        private final List<Boolean> learned = new ArrayList<>();

        Builder(String source) {
            this.source = source;
        }

        // The first text gets the tokenizer's special tokens (its bos), as the prompt does in TRL.
        void add(String text, boolean learn) {
            ids.add(tokenizer.encode(text, ids.isEmpty()));
            learned.add(learn);
        }

        void addEos() {
            long eos = tokenizer.eosTokenId().orElseThrow(() -> new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    source + ": the model's config.json names no eos_token_id to end the example with"));
            ids.add(new long[] {eos});
            learned.add(true);
        }

        Example.Sequence build() {
            int length = ids.stream().mapToInt(a -> a.length).sum();
            long[] inputIds = new long[length];
            long[] labels = new long[length];
            int at = 0;
            for (int part = 0; part < ids.size(); part++) {
                for (long id : ids.get(part)) {
                    inputIds[at] = id;
                    labels[at] = learned.get(part) ? id : IGNORE;
                    at++;
                }
            }
            return new Example.Sequence(inputIds, labels);
        }
    }
}
