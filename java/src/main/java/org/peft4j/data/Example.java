package org.peft4j.data;

/** A tokenized training example. */
public sealed interface Example {
    long[] inputIds();

    /**
     * Causal LM: {@code labels} as transformers takes them, unshifted and as long as {@code inputIds}, -100 where no
     * loss is taken (prompt, chat headers).
     */
    record Sequence(long[] inputIds, long[] labels) implements Example {}

    /** Sequence classification: the class id of the text. */
    record Classified(long[] inputIds, long label) implements Example {}
}
