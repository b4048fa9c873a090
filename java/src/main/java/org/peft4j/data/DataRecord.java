package org.peft4j.data;

import java.util.List;

/**
 * One line of a JSONL data file, in one of the four formats a file may hold (every line of a file the same):
 * {@code {"text": ...}} (language modelling on the whole text), {@code {"prompt": ..., "completion": ...}} (loss
 * on the completion only), {@code {"messages": [{"role": ..., "content": ...}, ...]}} (chat, loss on the
 * assistant turns) and {@code {"text": ..., "label": ...}} (sequence classification). {@link #source()} names the
 * file and line ("data.jsonl:12") for error messages.
 */
public sealed interface DataRecord {
    String source();

    record Text(String source, String text) implements DataRecord {}

    record PromptCompletion(String source, String prompt, String completion) implements DataRecord {}

    record Chat(String source, List<ChatMessage> messages) implements DataRecord {
        public Chat {
            messages = List.copyOf(messages);
        }
    }

    /** A text and its class, as written in the file (a string or an integer). */
    record Labeled(String source, String text, String label) implements DataRecord {}
}
