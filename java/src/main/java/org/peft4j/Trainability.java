package org.peft4j;

/** Whether a loaded adapter trains, as PEFT's {@code is_trainable}. */
public enum Trainability {
    /** Frozen, for inference (PEFT's default). */
    FROZEN,
    /** Its tensors train; the rest of the model stays frozen. */
    TRAINABLE
}
