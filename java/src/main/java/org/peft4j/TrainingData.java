package org.peft4j;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import org.peft4j.data.DataRecord;
import org.peft4j.data.Example;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.data.LabelSet;
import org.peft4j.internal.Peft4jNative.TrainingDataHandle;
import org.peft4j.text.Tokenizer;

/**
 * Tokenized training examples, held in native memory: causal-LM sequences (token ids with per-token labels) or
 * classification examples (token ids with a class id), not both in one set.
 *
 * <pre>{@code
 * try (TrainingData data = new TrainingData()) {
 *     data.addSequence(ids, ids);         // learn every token
 *     data.addClassified(otherIds, 1);    // (or) a sequence-classification example
 * }
 * // or from JSONL files as the CLI reads them (text, prompt + completion, chat messages, text + label):
 * try (HfTokenizer tokenizer = HfTokenizer.load(modelDir);
 *      TrainingData data = TrainingData.fromJsonl(List.of(Path.of("train.jsonl")), tokenizer)) { ... }
 * }</pre>
 *
 * <p>Threads: the methods are synchronized; a {@link Trainer} copies the examples when it is built.
 */
public final class TrainingData extends NativeResource {
    /** The label that excludes a position from the loss, as HF's {@code -100}. */
    public static final long IGNORE_INDEX = -100;

    public TrainingData() {
        super(Native.call(TrainingDataHandle::new), "training data");
    }

    /**
     * The records of JSONL files in the CLI's formats ({@code {"text"}}, {@code {"prompt", "completion"}},
     * {@code {"messages"}}, {@code {"text", "label"}}), tokenized as {@code train} does (prompt tokens left out of
     * the loss; chat through the tokenizer's template); text + label records take their class ids from the sorted
     * label names. A malformed file or line raises a {@link PeftException} naming the file and line.
     */
    public static TrainingData fromJsonl(List<Path> files, Tokenizer tokenizer) {
        Objects.requireNonNull(tokenizer, "tokenizer");
        List<DataRecord> records = JsonlReader.readAll(files);
        boolean classification = !records.isEmpty() && records.get(0) instanceof DataRecord.Labeled;
        return of(new ExampleEncoder(tokenizer, classification ? LabelSet.from(records) : null).encode(records));
    }

    /** Tokenized examples (causal-LM sequences or classified texts, not both) as training data. */
    public static TrainingData of(List<Example> examples) {
        Objects.requireNonNull(examples, "examples");
        TrainingData data = new TrainingData();
        try {
            for (Example example : examples) {
                if (example instanceof Example.Sequence sequence) {
                    data.addSequence(sequence.inputIds(), sequence.labels());
                } else {
                    Example.Classified classified = (Example.Classified) example;
                    data.addClassified(classified.inputIds(), classified.label());
                }
            }
            return data;
        } catch (RuntimeException e) {
            data.close();
            throw e;
        }
    }

    TrainingDataHandle nativeHandle() {
        return handle();
    }

    /**
     * Adds a causal-LM example. {@code labels[i]} is the target at position {@code i}, unshifted as HF labels
     * ({@code labels = inputIds} learns every token; {@link #IGNORE_INDEX} leaves a position out, e.g. the prompt).
     */
    public TrainingData addSequence(long[] inputIds, long[] labels) {
        Objects.requireNonNull(inputIds, "inputIds");
        Objects.requireNonNull(labels, "labels");
        if (inputIds.length != labels.length) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "a sequence needs one label per token: " + inputIds.length + " ids, " + labels.length + " labels");
        }
        synchronized (this) {
            run(() -> nativeHandle().addSequence(inputIds, labels, inputIds.length));
        }
        return this;
    }

    /** Adds a classification example with class id {@code label} (>= 0). */
    public TrainingData addClassified(long[] inputIds, long label) {
        Objects.requireNonNull(inputIds, "inputIds");
        synchronized (this) {
            run(() -> nativeHandle().addClassified(inputIds, inputIds.length, label));
        }
        return this;
    }

    /** The number of examples. */
    public synchronized long size() {
        return call(() -> nativeHandle().size());
    }
}
