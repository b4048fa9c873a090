package org.peft4j;

import java.nio.file.Path;
import java.util.Objects;
import java.util.function.Function;
import org.peft4j.internal.Peft4jNative.GenerationOptions;
import org.peft4j.internal.Peft4jNative.ModelHandle;
import org.peft4j.internal.Peft4jNative.ModelOutputHandle;
import org.peft4j.internal.Peft4jNative.TensorHandle;

/**
 * A HuggingFace base model (llama, qwen2, mistral, gpt2, bert, t5) loaded into the native core, for inference:
 * every call runs in eval mode without gradients, on CPU in f32. Close it (or use try-with-resources) to free its
 * weights.
 *
 * <p>A model may be shared between threads: forward, loss and generate calls from several threads run at once
 * (the core divides its intra-op threads among the calls in flight), while calls that change the model (those of a
 * {@link PeftModel} over it that add, switch or merge adapters, and training steps) wait for them and run alone.
 * {@link #close()} may come from any thread at any time: calls in flight finish first, later ones throw a
 * {@link PeftException} of kind CLOSED. Closing a base model that a {@link PeftModel} wraps leaves the
 * {@code PeftModel} working: it holds the weights until it is closed too.
 *
 * <pre>{@code
 * try (BaseModel model = BaseModel.load(Path.of("models/llama"));
 *      Tensor ids = Tensor.of(new long[] {1, 15, 27}, 1, 3);
 *      Tensor logits = model.forward(ids, null)) {
 *     ...
 * }
 * }</pre>
 */
public final class BaseModel extends NativeResource {
    // Passed for inputs that are not given; never modified, so one instance serves every call.
    private static final TensorHandle ABSENT = new TensorHandle();

    private final ModelLock lock;

    BaseModel(ModelHandle handle, ModelLock lock, String what) {
        super(handle, what);
        this.lock = lock;
    }

    ModelLock lock() {
        return lock;
    }

    /**
     * Loads an HF model directory: {@code config.json} and {@code model.safetensors} (or a sharded index), weights
     * in f32, bf16 or f16. A missing or unexpected tensor or a wrong shape raises a {@link PeftException} of kind
     * FORMAT naming each tensor; an unknown {@code model_type} one of kind UNSUPPORTED.
     */
    public static BaseModel load(Path dir) {
        Objects.requireNonNull(dir, "dir");
        return Native.call(() -> new BaseModel(ModelHandle.load(dir.toString()), new ModelLock(), "model"));
    }

    ModelHandle nativeHandle() {
        return handle();
    }

    /** The {@code model_type} of the model's config.json ("llama", "gpt2", ...). */
    public String modelType() {
        return lock.shared(this, () -> nativeHandle().modelType());
    }

    /** The number of parameter elements; tied weights (such as a tied LM head) count once. */
    public long parameterCount() {
        return lock.shared(this, () -> nativeHandle().parameterCount());
    }

    /**
     * The logits of {@code inputIds} {@code [batch, length]} (any integer dtype): {@code [batch, length, vocab]}
     * for causal LMs. Every id must lie in {@code [0, vocab size)} and every row hold at least one token.
     * {@code attentionMask} (1 = token, 0 = padding; integer, boolean, or floating point holding only 0 and 1) may
     * be null for all ones.
     */
    public Tensor forward(Tensor inputIds, Tensor attentionMask) {
        ModelInput input = ModelInput.builder().inputIds(inputIds).attentionMask(attentionMask).build();
        return run(input, out -> new Tensor(out.logits()));
    }

    /** A forward call with every input transformers' models take; the output owns the logits and the loss. */
    public ModelOutput forward(ModelInput input) {
        Objects.requireNonNull(input, "input");
        return run(input, out -> new ModelOutput(new Tensor(out.logits()), out.hasLoss() ? new Tensor(out.loss()) : null));
    }

    /**
     * The model's own loss (a scalar) for {@code labels}: for causal LMs the input ids themselves (the model shifts
     * them; -100 marks positions to ignore), for sequence classification the class ids {@code [batch]}.
     * {@code attentionMask} may be null.
     */
    public Tensor loss(Tensor inputIds, Tensor attentionMask, Tensor labels) {
        if (labels == null) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "labels is required for the loss");
        }
        ModelInput input = ModelInput.builder().inputIds(inputIds).attentionMask(attentionMask).labels(labels).build();
        return run(input, out -> new Tensor(out.loss()));
    }

    /**
     * Generates tokens after each row of {@code inputIds} {@code [batch, length]} with a KV cache, as transformers'
     * {@code generate()} does. {@code attentionMask} may be null for all ones; pad batches of different lengths on
     * the left. Causal LMs return {@code [batch, length + new]}, the prompt followed by the new tokens (rows that
     * stopped at an eos token are filled with the pad id); seq2seq LMs return the decoder sequence, starting with
     * the decoder start token. Sequence classification models raise a {@link PeftException} of kind UNSUPPORTED.
     */
    public Tensor generate(Tensor inputIds, Tensor attentionMask, GenerationConfig config) {
        Objects.requireNonNull(config, "config");
        if (inputIds == null) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "inputIds is required");
        }
        long[] eos = config.eosTokenIds().orElse(new long[0]);
        return lock.shared(this, () -> {
            try (GenerationOptions options = new GenerationOptions()) {
                options.maxNewTokens(config.maxNewTokens())
                        .doSample(config.doSample())
                        .temperature(config.temperature())
                        .topK(config.topK())
                        .topP(config.topP())
                        .repetitionPenalty(config.repetitionPenalty())
                        .eosTokenIdsGiven(config.eosTokenIds().isPresent())
                        .padTokenIdGiven(config.padTokenId().isPresent())
                        .padTokenId(config.padTokenId().orElse(0))
                        .seed(config.seed());
                return new Tensor(nativeHandle().generate(inputIds.nativeHandle(), handleOf(attentionMask), options,
                        eos, eos.length));
            }
        }, inputIds, attentionMask);
    }

    /**
     * Writes the model as an HF model directory: {@code config.json} and {@code model.safetensors} into {@code dir}
     * (created when missing), as {@code save_pretrained} does (tied and recomputed tensors left out). Each file is
     * written atomically. Tokenizer and generation files are not the model's to write: copy them beside.
     */
    public void save(Path dir) {
        Objects.requireNonNull(dir, "dir");
        try {
            java.nio.file.Files.createDirectories(dir);
        } catch (java.io.IOException e) {
            throw new PeftException(PeftException.Kind.IO, "cannot create directory '" + dir + "': " + e);
        }
        lock.shared(this, () -> nativeHandle().save(dir.toString()));
    }

    private <T> T run(ModelInput input, Function<ModelOutputHandle, T> result) {
        return lock.shared(this, () -> {
            try (ModelOutputHandle out = nativeHandle().forward(input.inputIds().nativeHandle(),
                    handleOf(input.attentionMask().orElse(null)),
                    handleOf(input.tokenTypeIds().orElse(null)),
                    handleOf(input.positionIds().orElse(null)),
                    handleOf(input.labels().orElse(null)),
                    handleOf(input.decoderInputIds().orElse(null)))) {
                return result.apply(out);
            }
        }, input.tensors());
    }

    // The handle of an optional input, pinned by the caller; absent for null.
    static TensorHandle handleOf(Tensor tensor) {
        return tensor == null ? ABSENT : tensor.nativeHandle();
    }

    @Override
    public String toString() {
        try {
            return "BaseModel(" + modelType() + ", " + parameterCount() + " parameters)";
        } catch (PeftException e) {
            if (e.kind() != PeftException.Kind.CLOSED) {
                throw e;
            }
            return "BaseModel(closed)";
        }
    }
}
