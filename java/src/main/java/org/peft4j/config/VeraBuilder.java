package org.peft4j.config;

/**
 * The builder of the VeRA methods ({@link VeraConfig}, {@link PveraConfig}): the fields PEFT's VeraConfig and
 * PveraConfig share, on top of the target and layer selection.
 *
 * @param <B> the method's builder
 * @param <C> the method's config
 */
public abstract class VeraBuilder<B extends VeraBuilder<B, C>, C extends TunerConfig>
        extends TunerConfig.LayerIndexBuilder<B, C> {
    /** {@code r}: the rank of the shared projections (default 256). */
    public final B r(int r) {
        return setPositive("r", r);
    }

    /** {@code projection_prng_key}: the seed PEFT draws the shared projections from (default 0). */
    public final B projectionPrngKey(int projectionPrngKey) {
        return set("projection_prng_key", projectionPrngKey);
    }

    /** {@code save_projection}: save the shared projections with the adapter (default true). */
    public final B saveProjection(boolean saveProjection) {
        return set("save_projection", saveProjection);
    }

    /** {@code d_initial}: initial value of the d vector (default 0.1). */
    public final B dInitial(double dInitial) {
        return set("d_initial", dInitial);
    }

    /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
    public final B fanInFanOut(boolean fanInFanOut) {
        return set("fan_in_fan_out", fanInFanOut);
    }

    /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
    public final B bias(String bias) {
        return set("bias", bias);
    }

    /** {@code init_weights}: true (the default): b starts at zero (identity); false: random. */
    public final B initWeights(boolean initWeights) {
        return set("init_weights", initWeights);
    }
}
