package org.peft4j.config;

import java.util.Map;

/**
 * The builder of the methods that learn coefficients at seeded random positions of a transform of ΔW
 * ({@link FourierFtConfig}, {@link WaveFtConfig}): the fields PEFT's FourierFTConfig and WaveFTConfig share, on top of
 * the target and layer selection. Their defaults differ by method (see each config).
 *
 * @param <B> the method's builder
 * @param <C> the method's config
 */
public abstract class SpectralBuilder<B extends SpectralBuilder<B, C>, C extends TunerConfig>
        extends TunerConfig.LayerSelectingBuilder<B, C> {
    /** {@code n_frequency}: the number of learned coefficients per layer (FourierFT 1000, WaveFT 2592). */
    public final B nFrequency(int nFrequency) {
        return setPositive("n_frequency", nFrequency);
    }

    /** {@code scaling}: the factor on ΔW (FourierFT 150, WaveFT 25). */
    public final B scaling(double scaling) {
        return set("scaling", scaling);
    }

    /** {@code random_loc_seed}: the seed of the coefficients' positions (default 777). */
    public final B randomLocSeed(int randomLocSeed) {
        return set("random_loc_seed", randomLocSeed);
    }

    /** {@code n_frequency_pattern}: per-module n_frequency. */
    public final B nFrequencyPattern(Map<String, Integer> nFrequencyPattern) {
        return setPattern("n_frequency_pattern", nFrequencyPattern);
    }

    /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
    public final B fanInFanOut(boolean fanInFanOut) {
        return set("fan_in_fan_out", fanInFanOut);
    }

    /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
    public final B bias(String bias) {
        return set("bias", bias);
    }
}
