package org.peft4j.cli;

import java.nio.file.Path;
import org.peft4j.Trainer;
import picocli.CommandLine.Option;

/** The trainer's options, named after HF TrainingArguments' fields. */
final class TrainingOptions {
    @Option(names = "--optimizer", paramLabel = "NAME", description = "adamw or sgd (default: ${DEFAULT-VALUE})")
    String optimizer = "adamw";

    @Option(names = "--learning-rate", paramLabel = "LR", description = "peak learning rate (default: ${DEFAULT-VALUE})")
    double learningRate = 2e-4;

    @Option(names = "--weight-decay", paramLabel = "W", description = "decoupled weight decay (default: ${DEFAULT-VALUE})")
    double weightDecay = 0.0;

    @Option(names = "--lr-scheduler-type", paramLabel = "TYPE",
            description = "constant, linear or cosine after the warmup (default: ${DEFAULT-VALUE})")
    String lrSchedulerType = "linear";

    @Option(names = "--warmup-steps", paramLabel = "N", description = "linear warmup steps (default: ${DEFAULT-VALUE})")
    long warmupSteps = 0;

    @Option(names = "--max-steps", paramLabel = "N", description = "optimizer steps; -1 = from --num-train-epochs (default: ${DEFAULT-VALUE})")
    long maxSteps = -1;

    @Option(names = "--num-train-epochs", paramLabel = "E", description = "epochs when --max-steps is -1 (default: ${DEFAULT-VALUE})")
    double numTrainEpochs = 1;

    @Option(names = "--per-device-train-batch-size", paramLabel = "B", description = "examples per micro-batch (default: ${DEFAULT-VALUE})")
    long trainBatchSize = 8;

    @Option(names = "--per-device-eval-batch-size", paramLabel = "B", description = "examples per eval batch (default: ${DEFAULT-VALUE})")
    long evalBatchSize = 8;

    @Option(names = "--gradient-accumulation-steps", paramLabel = "N", description = "micro-batches per step (default: ${DEFAULT-VALUE})")
    long gradientAccumulationSteps = 1;

    @Option(names = "--max-grad-norm", paramLabel = "X", description = "gradient clipping; 0 = off (default: ${DEFAULT-VALUE})")
    double maxGradNorm = 1.0;

    @Option(names = "--eval-steps", paramLabel = "N", description = "evaluate every N steps; 0 = at the end (default: ${DEFAULT-VALUE})")
    long evalSteps = 0;

    @Option(names = "--early-stopping-patience", paramLabel = "N",
            description = "stop after N evaluations without a better eval loss; 0 = off (default: ${DEFAULT-VALUE})")
    long earlyStoppingPatience = 0;

    @Option(names = "--save-steps", paramLabel = "N", description = "checkpoint every N steps; 0 = at the end (default: ${DEFAULT-VALUE})")
    long saveSteps = 0;

    @Option(names = "--save-total-limit", paramLabel = "N", description = "checkpoints kept; 0 = all (default: ${DEFAULT-VALUE})")
    long saveTotalLimit = 2;

    @Option(names = "--seed", paramLabel = "S",
            description = "seed of the adapter's initialisation, the data order and dropout: one seed, one thread, "
                    + "bitwise the same run (default: ${DEFAULT-VALUE})")
    long seed = 42;

    @Option(names = "--packing", description = "concatenate examples into --max-seq-length blocks instead of padding")
    boolean packing;

    @Option(names = "--max-seq-length", paramLabel = "N",
            description = "longer examples are truncated, as are examples longer than the model's positions, with a "
                    + "warning saying how many (default: ${DEFAULT-VALUE})")
    long maxSeqLength = 512;

    @Option(names = "--bf16", description = "bfloat16 autocast (CUDA only)")
    boolean bf16;

    @Option(names = "--gradient-checkpointing", description = "recompute each layer in the backward pass (less memory)")
    boolean gradientCheckpointing;

    /** Sets these options on {@code builder}; {@code padTokenId} from the tokenizer (0 when it names none). */
    Trainer.Builder apply(Trainer.Builder builder, Path outputDir, long padTokenId, boolean classification) {
        return builder.optimizer(optimizer).learningRate(learningRate).weightDecay(weightDecay)
                .lrSchedulerType(lrSchedulerType).warmupSteps(warmupSteps).maxSteps(maxSteps)
                .numTrainEpochs(numTrainEpochs).batchSize(trainBatchSize).evalBatchSize(evalBatchSize)
                .gradientAccumulationSteps(gradientAccumulationSteps).maxGradNorm(maxGradNorm).evalSteps(evalSteps)
                .earlyStoppingPatience(earlyStoppingPatience).saveSteps(saveSteps).saveTotalLimit(saveTotalLimit)
                .outputDir(outputDir).seed(seed).packing(packing).maxSeqLength(maxSeqLength).padTokenId(padTokenId)
                .bf16(bf16).gradientCheckpointing(gradientCheckpointing).task(classification ? "seq_cls" : "causal_lm");
    }
}
