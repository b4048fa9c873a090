package org.peft4j;

/** Receives each training step's metrics from {@link Trainer#train(TrainingListener)}. */
@FunctionalInterface
public interface TrainingListener {
    void onStep(StepMetrics metrics);
}
