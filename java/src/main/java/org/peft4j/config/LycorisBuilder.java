package org.peft4j.config;

import java.util.Map;

/**
 * The builder of the LyCORIS methods ({@link LoHaConfig}, {@link LoKrConfig}): the fields PEFT's LycorisConfig gives
 * them both, on top of the target and layer selection.
 *
 * @param <B> the method's builder
 * @param <C> the method's config
 */
public abstract class LycorisBuilder<B extends LycorisBuilder<B, C>, C extends TunerConfig>
        extends TunerConfig.LayerSelectingBuilder<B, C> {
    /** {@code alpha}: the scaling numerator, scaling = alpha / r (default 8). */
    public final B alpha(double alpha) {
        return set("alpha", alpha);
    }

    /** {@code rank_dropout}: dropout over the rank dimension in training (default 0). */
    public final B rankDropout(double rankDropout) {
        return setProbability("rank_dropout", rankDropout);
    }

    /** {@code module_dropout}: probability of skipping the whole adapter for a batch in training (default 0). */
    public final B moduleDropout(double moduleDropout) {
        return setProbability("module_dropout", moduleDropout);
    }

    /** {@code rank_pattern}: per-module ranks, keys matched as PEFT's get_pattern_key does. */
    public final B rankPattern(Map<String, Integer> rankPattern) {
        return setPattern("rank_pattern", rankPattern);
    }

    /** {@code alpha_pattern}: per-module alpha. */
    public final B alphaPattern(Map<String, Double> alphaPattern) {
        return setPattern("alpha_pattern", alphaPattern);
    }
}
