package org.peft4j;

import java.nio.file.Path;
import java.util.Optional;

/**
 * What one training step did.
 *
 * @param globalStep optimizer steps taken so far
 * @param maxSteps the steps the run takes unless it stops early
 * @param epoch epochs done, fractional
 * @param loss the step's mean training loss
 * @param learningRate the learning rate the step's update used
 * @param gradNorm the total gradient norm before clipping
 * @param tokensSeen non-padding input tokens trained on so far
 * @param tokensPerSecond the step's tokens over its forward, backward and update time
 * @param evaluated whether an evaluation ran after this step
 * @param evalLoss the latest eval loss, NaN before the first evaluation
 * @param evalAccuracy the latest eval accuracy (sequence classification), else NaN
 * @param stoppedEarly whether early stopping ended the run
 * @param checkpoint the newest checkpoint directory written, if any
 */
public record StepMetrics(long globalStep, long maxSteps, double epoch, double loss, double learningRate,
        double gradNorm, long tokensSeen, double tokensPerSecond, boolean evaluated, double evalLoss,
        double evalAccuracy, boolean stoppedEarly, Optional<Path> checkpoint) {}
