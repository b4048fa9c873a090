package org.peft4j;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import org.peft4j.internal.Peft4jNative;
import org.peft4j.internal.Peft4jNative.PeftModelHandle;
import org.peft4j.internal.Peft4jNative.TrainerHandle;
import org.peft4j.internal.Peft4jNative.TrainingDataHandle;

/**
 * Trains a {@link PeftModel}'s active adapter: AdamW or SGD, constant/linear/cosine learning-rate schedules with
 * warmup, gradient accumulation and clipping, evaluation and early stopping, and checkpoints
 * ({@code outputDir/checkpoint-<step>/}: the adapter in PEFT's format, optimizer and trainer state) from which
 * {@link #resume()} continues exactly. Settings follow HF TrainingArguments' names and defaults.
 *
 * <pre>{@code
 * try (Trainer trainer = Trainer.builder().model(peftModel).trainData(train).evalData(eval)
 *         .learningRate(2e-4).maxSteps(100).outputDir(Path.of("out")).build()) {
 *     StepMetrics last = trainer.train(m -> System.out.println(m.globalStep() + " " + m.loss()));
 *     trainer.saveAdapter(Path.of("out/final"));
 * }
 * }</pre>
 *
 * <p>A NaN or infinite loss stops training with a {@link PeftException} of kind NUMERICAL naming the step; the
 * checkpoints on disk stay as they were. A process killed while saving leaves every {@code checkpoint-<step>} whole;
 * what it left half-done is removed when the next trainer on that output directory is built.
 *
 * <p>Threads: a step, an evaluation, a resume and a checkpoint run alone on the model (inference calls on it from
 * other threads wait for them); the trainer keeps its model and data alive, so closing the {@link PeftModel} or the
 * {@link TrainingData} while it trains is safe; closing the trainer from another thread lets the step in flight
 * finish, later calls throw a {@link PeftException} of kind CLOSED.
 */
public final class Trainer extends NativeResource {
    private final ModelLock lock;

    private Trainer(TrainerHandle handle, ModelLock lock) {
        super(handle, "trainer");
        this.lock = lock;
    }

    private TrainerHandle nativeHandle() {
        return handle();
    }

    public static Builder builder() {
        return new Builder();
    }

    /**
     * Checks, creating nothing, that {@code dir} can be an output directory: a directory this process can write, or
     * a path that can be created as one. An {@link PeftException} of kind IO names the problem otherwise (a file, a
     * path below a file, no permission, a read-only file system). {@link Builder#build()} checks its output
     * directory so; commands that write elsewhere call this before any work.
     */
    public static void checkOutputDir(Path dir) {
        Native.run(() -> Peft4jNative.checkOutputDir(dir.toString()));
    }

    /** Steps until training is finished, handing each step's metrics to {@code listener}; returns the last ones. */
    public StepMetrics train(TrainingListener listener) {
        Objects.requireNonNull(listener, "listener");
        while (step()) {
            listener.onStep(metrics());
        }
        return metrics();
    }

    /** One optimizer step (with the evaluation and checkpoint due at it); false, doing nothing, once finished. */
    public boolean step() {
        return lock.exclusive(this, () -> nativeHandle().step());
    }

    /** The metrics of the last step. */
    public StepMetrics metrics() {
        return lock.shared(this, () -> {
            TrainerHandle h = nativeHandle();
            String checkpoint = h.lastCheckpoint();
            return new StepMetrics(h.globalStep(), h.maxSteps(), h.epoch(), h.loss(), h.learningRate(), h.gradNorm(),
                    h.tokensSeen(), h.tokensPerSecond(), h.evaluatedThisStep(), h.evalLoss(), h.evalAccuracy(),
                    h.stoppedEarly(), checkpoint.isEmpty() ? Optional.empty() : Optional.of(Path.of(checkpoint)));
        });
    }

    /** Continues from the newest complete checkpoint under the output directory (NOT_FOUND when there is none). */
    public void resume() {
        lock.exclusive(this, () -> nativeHandle().resumeFromLatest());
    }

    /** Continues from the given checkpoint directory. */
    public void resume(Path checkpointDir) {
        lock.exclusive(this, () -> nativeHandle().resumeFrom(checkpointDir.toString()));
    }

    /** The eval loss over the eval data now; the accuracy (classification) is then in {@link #metrics()}. */
    public double evaluate() {
        return lock.exclusive(this, () -> nativeHandle().evaluate());
    }

    /** Writes a checkpoint now (atomically) and returns its directory. */
    public Path saveCheckpoint() {
        return Path.of(lock.exclusive(this, () -> nativeHandle().saveCheckpoint()));
    }

    /** Saves the trained adapter in PEFT's format (adapter_config.json + adapter_model.safetensors). */
    public void saveAdapter(Path dir) {
        lock.shared(this, () -> nativeHandle().saveAdapter(dir.toString()));
    }

    /**
     * HF's {@code log_history} as JSON text: an array with an entry per step ({@code step, epoch, loss,
     * learning_rate, grad_norm, tokens_per_second}) and per evaluation ({@code step, eval_loss}, and
     * {@code eval_accuracy} for classification), from step 1 on: after {@link #resume()} the checkpoint's too.
     */
    public String logHistory() {
        return lock.shared(this, () -> nativeHandle().logHistory());
    }

    /** What setting up found to tell the user, e.g. how many examples were truncated and to what length. */
    public List<String> warnings() {
        String text = lock.shared(this, () -> nativeHandle().warnings());
        return text.isEmpty() ? List.of() : List.of(text.split("\n"));
    }

    /** Settings left unset keep the native defaults (HF TrainingArguments' where one exists). */
    public static final class Builder {
        private final ObjectNode config = new ObjectMapper().createObjectNode();
        private PeftModel model;
        private TrainingData trainData;
        private TrainingData evalData;

        private Builder() {}

        public Builder model(PeftModel model) {
            this.model = model;
            return this;
        }

        public Builder trainData(TrainingData data) {
            this.trainData = data;
            return this;
        }

        /** Data for evaluation, eval loss and early stopping; none by default. */
        public Builder evalData(TrainingData data) {
            this.evalData = data;
            return this;
        }

        /** "adamw" (default) or "sgd". */
        public Builder optimizer(String name) {
            config.put("optimizer", name);
            return this;
        }

        public Builder learningRate(double lr) {
            config.put("learning_rate", lr);
            return this;
        }

        public Builder weightDecay(double decay) {
            config.put("weight_decay", decay);
            return this;
        }

        public Builder adamBetas(double beta1, double beta2) {
            config.put("adam_beta1", beta1);
            config.put("adam_beta2", beta2);
            return this;
        }

        public Builder adamEpsilon(double epsilon) {
            config.put("adam_epsilon", epsilon);
            return this;
        }

        /** SGD's momentum. */
        public Builder momentum(double momentum) {
            config.put("momentum", momentum);
            return this;
        }

        /** "constant", "linear" (default) or "cosine", each after the warmup steps. */
        public Builder lrSchedulerType(String type) {
            config.put("lr_scheduler_type", type);
            return this;
        }

        public Builder warmupSteps(long steps) {
            config.put("warmup_steps", steps);
            return this;
        }

        /** Total optimizer steps; by default they follow from {@link #numTrainEpochs(double)}. */
        public Builder maxSteps(long steps) {
            config.put("max_steps", steps);
            return this;
        }

        public Builder numTrainEpochs(double epochs) {
            config.put("num_train_epochs", epochs);
            return this;
        }

        public Builder batchSize(long size) {
            config.put("per_device_train_batch_size", size);
            return this;
        }

        public Builder evalBatchSize(long size) {
            config.put("per_device_eval_batch_size", size);
            return this;
        }

        public Builder gradientAccumulationSteps(long steps) {
            config.put("gradient_accumulation_steps", steps);
            return this;
        }

        /** Clips the total gradient norm to this (default 1.0); 0 turns clipping off. */
        public Builder maxGradNorm(double norm) {
            config.put("max_grad_norm", norm);
            return this;
        }

        /** Evaluates every {@code steps} steps; by default only at the end. */
        public Builder evalSteps(long steps) {
            config.put("eval_steps", steps);
            return this;
        }

        /** Stops after this many evaluations without a lower eval loss; 0 (default) never stops early. */
        public Builder earlyStoppingPatience(long evaluations) {
            config.put("early_stopping_patience", evaluations);
            return this;
        }

        /** Writes a checkpoint every {@code steps} steps; by default only at the end. */
        public Builder saveSteps(long steps) {
            config.put("save_steps", steps);
            return this;
        }

        /** The newest checkpoints kept (default 2); 0 keeps all. */
        public Builder saveTotalLimit(long limit) {
            config.put("save_total_limit", limit);
            return this;
        }

        public Builder outputDir(Path dir) {
            config.put("output_dir", dir.toString());
            return this;
        }

        /**
         * Seeds the data order and dropout (default 42). The adapter's initial weights are drawn when it is created:
         * seed them with {@link PeftModel#create(BaseModel, String, AdapterConfig, long)}.
         */
        public Builder seed(long seed) {
            config.put("seed", seed);
            return this;
        }

        /** Concatenates the sequences into blocks of {@link #maxSeqLength(long)} tokens instead of padding. */
        public Builder packing(boolean packing) {
            config.put("packing", packing);
            return this;
        }

        /**
         * Longer examples are cut to this many tokens (default 512), or to the model's positions where those are
         * fewer, as HF truncates; {@link Trainer#warnings()} says how many were cut.
         */
        public Builder maxSeqLength(long length) {
            config.put("max_seq_length", length);
            return this;
        }

        public Builder padTokenId(long id) {
            config.put("pad_token_id", id);
            return this;
        }

        /** bf16 autocast (CUDA only). */
        public Builder bf16(boolean bf16) {
            config.put("bf16", bf16);
            return this;
        }

        /** Gradient checkpointing: each layer's activations are recomputed in the backward pass (less memory). */
        public Builder gradientCheckpointing(boolean on) {
            config.put("gradient_checkpointing", on);
            return this;
        }

        /** "causal_lm" (default) or "seq_cls"; must match the model. */
        public Builder task(String task) {
            config.put("task", task);
            return this;
        }

        /** The training config JSON that {@link #build()} hands to the core. */
        public String toJson() {
            return config.toString();
        }

        public Trainer build() {
            Objects.requireNonNull(model, "model");
            Objects.requireNonNull(trainData, "trainData");
            return model.lock().exclusive(model, () -> {
                TrainingDataHandle eval = evalData != null ? evalData.nativeHandle() : new TrainingDataHandle();
                try {
                    return new Trainer(TrainerHandle.create(model.<PeftModelHandle>handle(), trainData.nativeHandle(),
                            eval, toJson()), model.lock());
                } finally {
                    if (evalData == null) {
                        eval.close();
                    }
                }
            }, trainData, evalData);
        }
    }
}
