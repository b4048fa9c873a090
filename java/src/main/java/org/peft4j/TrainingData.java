package org.peft4j;

import java.util.Objects;
import org.peft4j.internal.Peft4jNative.TrainingDataHandle;

/**
 * Tokenized training examples, held in native memory: causal-LM sequences (token ids with per-token labels) or
 * classification examples (token ids with a class id), not both in one set.
 *
 * <pre>{@code
 * try (TrainingData data = new TrainingData()) {
 *     data.addSequence(ids, ids);         // learn every token
 *     data.addClassified(otherIds, 1);    // (or) a sequence-classification example
 * }
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
