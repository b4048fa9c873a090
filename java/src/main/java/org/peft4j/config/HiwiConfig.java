package org.peft4j.config;

import java.util.List;
import java.util.Map;

/**
 * HiWi ({@code peft_type} HIWI, a peft4j method): a small adapter applied to pretrained parameters rather than hidden
 * states, p′ = p + f(p·W_down)·W_up, thrown away after training: the saved adapter holds p′ under the model's own names.
 * Without target modules it adapts the biases of the feed-forward modules. See docs/methods.md.
 */
public final class HiwiConfig extends TunerConfig {
    private HiwiConfig(Map<String, Object> fields) {
        super("HIWI", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link HiwiConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, HiwiConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected HiwiConfig create(Map<String, Object> fields) {
            return new HiwiConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code r}: the adapter's bottleneck width (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code non_linearity}: f, a transformers activation name (default "relu"). */
        public Builder nonLinearity(String name) {
            return set("non_linearity", name);
        }

        /** {@code target_parameters}: "bias" (the default) and/or "weight" (row by row). */
        public Builder targetParameters(String... names) {
            return set("target_parameters", List.of(names));
        }
    }
}
