package org.peft4j;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import org.peft4j.config.AdapterConfig;
import org.peft4j.internal.Peft4jNative;
import org.peft4j.internal.Peft4jNative.PeftModelHandle;

/**
 * A base model with named adapters, as PEFT's {@code PeftModel}: adapters of any supported method, loaded from and
 * saved to PEFT's files ({@code adapter_config.json} + {@code adapter_model.safetensors}, PEFT's keys), so they
 * move freely between peft4j and Python.
 *
 * <p>Wrapping adapts the base model in place, as {@code get_peft_model} does: use the {@code PeftModel} from then
 * on. Errors (a target module that does not exist, an adapter that does not fit the base, an unknown
 * {@code peft_type}, a missing key) raise a {@link PeftException} naming the problem and leave the model as it was.
 * A base model carries one {@code PeftModel} at a time: while one with adapters wraps it, {@link #create} and
 * {@link #load} on the same base are refused (add further adapters with {@link #addAdapter} or
 * {@link #loadAdapter}); after {@link #mergeAndUnload()}, or when its adapters are deleted, the base may be wrapped
 * again. Closing the {@code PeftModel} does not take its adapter layers out of the base.
 *
 * <p>Threads: as {@link BaseModel} (they share one lock): forward, loss and generate run concurrently; adding,
 * loading, switching, deleting, disabling, merging adapters and {@link #forwardParallel} run alone; closing is safe
 * at any time.
 *
 * <pre>{@code
 * try (BaseModel base = BaseModel.load(Path.of("models/llama"));
 *      PeftModel model = PeftModel.load(base, Path.of("my-adapter"))) {
 *     Tensor logits = model.forward(ids, mask);
 * }
 * }</pre>
 */
public final class PeftModel extends NativeResource {
    private final ModelLock lock;
    private final BaseModel view;

    private PeftModel(PeftModelHandle handle, ModelLock lock) {
        super(handle, "PEFT model");
        this.lock = lock;
        this.view = new BaseModel(Native.call(handle::model), lock, "PEFT model");
    }

    ModelLock lock() {
        return lock;
    }

    private PeftModelHandle nativeHandle() {
        return handle();
    }

    /**
     * Wraps {@code base} and adds a new adapter {@code name} initialised as {@code config} says. Random initial
     * weights draw from libtorch's global generators as they stand, as PEFT's {@code get_peft_model} draws from
     * torch's; {@link #create(BaseModel, String, AdapterConfig, long)} makes them repeatable.
     */
    public static PeftModel create(BaseModel base, String name, AdapterConfig config) {
        Objects.requireNonNull(config, "config");
        return wrap(base, model -> model.addAdapter(name, config));
    }

    /**
     * As {@link #create(BaseModel, String, AdapterConfig)}, libtorch's generators first seeded with {@code seed}
     * (transformers' {@code set_seed}): one seed gives bitwise the same adapter while no other thread draws random
     * numbers meanwhile. The CLI's {@code train --seed} (default 42) seeds this way.
     */
    public static PeftModel create(BaseModel base, String name, AdapterConfig config, long seed) {
        Objects.requireNonNull(config, "config");
        return wrap(base, model -> model.addAdapter(name, config, seed));
    }

    /**
     * As {@link #create(BaseModel, String, AdapterConfig, long)} for methods made from data: LoRA's initialisations
     * ({@code init_lora_weights} "corda", "eva", "lora_ga") and PaFi's Fisher mask ({@code PafiConfig.maskType("fisher")}).
     * The base model first runs over {@code data}, each example cut to {@code maxLength} tokens, {@code batchSize}
     * examples a batch, right-padded with {@code padTokenId} (CorDA and PaFi take each sequence alone, unpadded).
     */
    public static PeftModel create(BaseModel base, String name, AdapterConfig config, long seed, TrainingData data,
                                   long batchSize, long maxLength, long padTokenId) {
        Objects.requireNonNull(config, "config");
        return wrap(base, model -> model.addAdapter(name, config, seed, data, batchSize, maxLength, padTokenId));
    }

    /**
     * As {@link #create(BaseModel, String, AdapterConfig, long, TrainingData, long, long, long)} with the examples
     * uncut, one a batch (PaFi's calibration examples).
     */
    public static PeftModel create(BaseModel base, String name, AdapterConfig config, long seed, TrainingData data) {
        return create(base, name, config, seed, data, 1, Long.MAX_VALUE, 0);
    }

    /** Whether {@code config} is a LoRA config whose {@code init_lora_weights} learns from data ("corda", "eva", "lora_ga"). */
    public static boolean initialisesFromData(AdapterConfig config) {
        return Native.call(() -> Peft4jNative.initNeedsData(config.toJson()));
    }

    /**
     * Whether {@code config} is a LoRA config whose {@code init_lora_weights} moves part of the base weight into the
     * adapter ("pissa", "pissa_niter_K", "olora", "corda", "lora_ga"), leaving a residual base model.
     */
    public static boolean initialisationLeavesResidualBase(AdapterConfig config) {
        return Native.call(() -> Peft4jNative.initMutatesBase(config.toJson()));
    }

    /** Wraps {@code base} and loads a PEFT adapter directory as adapter "default" (frozen, for inference). */
    public static PeftModel load(BaseModel base, Path adapterDir) {
        return load(base, adapterDir, "default", Trainability.FROZEN);
    }

    /** Wraps {@code base} and loads a PEFT adapter directory as adapter {@code name}. */
    public static PeftModel load(BaseModel base, Path adapterDir, String name, Trainability trainability) {
        return wrap(base, model -> model.loadAdapter(adapterDir, name, trainability));
    }

    // Wrapping and the first adapter happen under the base's lock, so that no other thread wraps the base between
    // them (an adapter-less PeftModel may be replaced); the model is closed again when its first adapter fails.
    private static PeftModel wrap(BaseModel base, Consumer<PeftModel> firstAdapter) {
        Objects.requireNonNull(base, "base");
        return base.lock().exclusive(base, () -> {
            PeftModel model = new PeftModel(PeftModelHandle.wrap(base.nativeHandle()), base.lock());
            try {
                firstAdapter.accept(model);
                return model;
            } catch (RuntimeException e) {
                model.close();
                throw e;
            }
        });
    }

    public void addAdapter(String name, AdapterConfig config) {
        Objects.requireNonNull(config, "config");
        lock.exclusive(this, () -> nativeHandle().addAdapter(name, config.toJson()));
    }

    /** Adds an adapter whose random initial weights follow from {@code seed} (>= 0), as {@link #create(BaseModel, String, AdapterConfig, long)}. */
    public void addAdapter(String name, AdapterConfig config, long seed) {
        Objects.requireNonNull(config, "config");
        lock.exclusive(this, () -> nativeHandle().addAdapter(name, config.toJson(), seed));
    }

    /**
     * Adds an adapter made from data, as
     * {@link #create(BaseModel, String, AdapterConfig, long, TrainingData, long, long, long)}.
     */
    public void addAdapter(String name, AdapterConfig config, long seed, TrainingData data, long batchSize,
                           long maxLength, long padTokenId) {
        Objects.requireNonNull(config, "config");
        Objects.requireNonNull(data, "data");
        lock.exclusive(this, () -> nativeHandle().addAdapter(name, config.toJson(), seed, data.nativeHandle(), batchSize,
                maxLength, padTokenId), data);
    }

    /** Adds an adapter made from data, as {@link #create(BaseModel, String, AdapterConfig, long, TrainingData)}. */
    public void addAdapter(String name, AdapterConfig config, long seed, TrainingData data) {
        addAdapter(name, config, seed, data, 1, Long.MAX_VALUE, 0);
    }

    /** Loads a PEFT adapter directory as adapter {@code name}. */
    public void loadAdapter(Path dir, String name, Trainability trainability) {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(trainability, "trainability");
        lock.exclusive(this, () -> nativeHandle().loadAdapter(dir.toString(), name,
                trainability == Trainability.TRAINABLE));
    }

    /** Saves the active adapter in PEFT's format into {@code dir} (created when missing); files are written atomically. */
    public void save(Path dir) {
        save(dir, activeAdapter());
    }

    public void save(Path dir, String name) {
        lock.shared(this, () -> nativeHandle().saveAdapter(dir.toString(), name));
    }

    /**
     * PEFT's {@code save_pretrained(dir, path_initial_model_for_weight_conversion=...)}: for an adapter whose init
     * moved part of the base weight into it (PiSSA, OLoRA, CorDA, LoRA-GA), {@code pathInitialModelForWeightConversion}
     * holds the adapter as {@link #save(Path, String)} wrote it right after it was made; {@code dir} receives the
     * change training made as a plain LoRA of rank 2r, which applies to the untouched base model. The initial
     * adapter's config is rewritten with {@code init_lora_weights} true, as PEFT does.
     */
    public void save(Path dir, String name, Path pathInitialModelForWeightConversion) {
        Objects.requireNonNull(pathInitialModelForWeightConversion, "pathInitialModelForWeightConversion");
        lock.shared(this, () -> nativeHandle().saveAdapter(dir.toString(), name,
                pathInitialModelForWeightConversion.toString()));
    }

    /** Makes {@code name} the one active adapter; its tensors become trainable, all others frozen. */
    public void setAdapter(String name) {
        lock.exclusive(this, () -> nativeHandle().setAdapter(name));
    }

    /**
     * Makes several adapters active at once, in order (PEFT's {@code base_model.set_adapter([...])}): every layer
     * applies each in turn. Unlike {@link #setAdapter} it leaves which tensors train as they are.
     */
    public void setActiveAdapters(List<String> names) {
        Objects.requireNonNull(names, "names");
        if (names.isEmpty() || names.stream().anyMatch(n -> n == null || n.isEmpty() || n.contains(","))) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "setActiveAdapters needs one or more adapter names, got " + names);
        }
        lock.exclusive(this, () -> nativeHandle().setActiveAdapters(String.join(",", names)));
    }

    public void deleteAdapter(String name) {
        lock.exclusive(this, () -> nativeHandle().deleteAdapter(name));
    }

    /** While disabled the model computes as the base model alone (PEFT's disable_adapter()). */
    public void setAdaptersDisabled(boolean disabled) {
        lock.exclusive(this, () -> nativeHandle().setDisabled(disabled));
    }

    public List<String> adapterNames() {
        return lock.shared(this, () -> {
            List<String> names = new ArrayList<>();
            for (long i = 0, n = nativeHandle().adapterCount(); i < n; i++) {
                names.add(nativeHandle().adapterName(i));
            }
            return Collections.unmodifiableList(names);
        });
    }

    /** The active adapter's name. */
    public String activeAdapter() {
        String active = lock.shared(this, () -> nativeHandle().activeAdapter());
        if (active.isEmpty()) {
            throw new PeftException(PeftException.Kind.NOT_FOUND, "the model has no active adapter");
        }
        return active;
    }

    /** The adapter's config as PEFT's adapter_config.json text, PEFT's defaults filled in. */
    public String adapterConfig(String name) {
        return lock.shared(this, () -> nativeHandle().adapterConfig(name));
    }

    /** Elements of the tensors that train (PEFT's print_trainable_parameters count). */
    public long trainableParameterCount() {
        return lock.shared(this, () -> nativeHandle().trainableParameterCount());
    }

    /** Folds the active adapter into the base weights (faster inference); {@link #unmerge()} undoes it. */
    public void merge() {
        lock.exclusive(this, () -> nativeHandle().merge());
    }

    public void unmerge() {
        lock.exclusive(this, () -> nativeHandle().unmerge());
    }

    /**
     * Merges the active adapter and removes every adapter layer: the plain base model with the update folded in.
     * This PeftModel is spent afterwards.
     */
    public BaseModel mergeAndUnload() {
        return lock.exclusive(this, () -> new BaseModel(nativeHandle().mergeAndUnload(), lock, "model"));
    }

    /** PEFT's add_weighted_adapter (LoRA): combination "linear", "cat" or "svd" of existing adapters. */
    public void addWeightedAdapter(List<String> adapters, double[] weights, String name, String combinationType) {
        if (adapters.size() != weights.length) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    adapters.size() + " adapters but " + weights.length + " weights");
        }
        lock.exclusive(this, () -> nativeHandle().addWeightedAdapter(String.join(",", adapters), weights, weights.length,
                name, combinationType, 0));
    }

    /**
     * AdapterHub's Parallel block: the batch of B rows runs once per adapter, copy j through {@code adapters.get(j)}
     * in every layer; returns the logits of the n·B rows, adapter by adapter. {@code attentionMask} may be null.
     */
    public Tensor forwardParallel(List<String> adapters, Tensor inputIds, Tensor attentionMask) {
        Objects.requireNonNull(inputIds, "inputIds");
        if (adapters.isEmpty()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "Parallel needs at least one adapter");
        }
        // Routing rows to adapters sets per-call state in the layers: no other call may overlap it.
        return lock.exclusive(this, () -> new Tensor(nativeHandle().forwardParallel(String.join(",", adapters),
                inputIds.nativeHandle(), BaseModel.handleOf(attentionMask))), inputIds, attentionMask);
    }

    /**
     * PEFT's mixed batch ({@code forward(..., adapter_names=...)}): row i goes through adapter
     * {@code rowAdapters.get(i)} ({@code "__base__"} for the base model alone); returns the logits. Methods that PEFT
     * does not route per row refuse it with a {@link PeftException} naming the method. {@code attentionMask} may be
     * null.
     */
    public Tensor forwardMixed(List<String> rowAdapters, Tensor inputIds, Tensor attentionMask) {
        Objects.requireNonNull(rowAdapters, "rowAdapters");
        Objects.requireNonNull(inputIds, "inputIds");
        if (rowAdapters.size() != inputIds.shape()[0]) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "forwardMixed needs one adapter name per "
                    + "row: " + rowAdapters.size() + " names for " + inputIds.shape()[0] + " rows");
        }
        // Routing rows to adapters sets per-call state in the layers: no other call may overlap it.
        return lock.exclusive(this, () -> new Tensor(nativeHandle().forwardMixed(String.join(",", rowAdapters),
                inputIds.nativeHandle(), BaseModel.handleOf(attentionMask))), inputIds, attentionMask);
    }

    /** Logits through the active adapter; see {@link BaseModel#forward(Tensor, Tensor)}. */
    public Tensor forward(Tensor inputIds, Tensor attentionMask) {
        return view.forward(inputIds, attentionMask);
    }

    public ModelOutput forward(ModelInput input) {
        return view.forward(input);
    }

    public Tensor loss(Tensor inputIds, Tensor attentionMask, Tensor labels) {
        return view.loss(inputIds, attentionMask, labels);
    }

    public Tensor generate(Tensor inputIds, Tensor attentionMask, GenerationConfig config) {
        return view.generate(inputIds, attentionMask, config);
    }

    /** Closes the inference view and the adapters' handle; see {@link NativeResource#close()}. */
    @Override
    public void close() {
        view.close();
        super.close();
    }
}
