package org.peft4j.config;

import java.util.Map;

/**
 * Layer freezing ({@code peft_type} LAYER_FREEZING, a peft4j method): full fine-tuning of the top k layers, or of
 * the modules a pattern names, with everything else frozen; the adapter saves exactly the trained tensors under the
 * model's own names. See docs/methods.md.
 *
 * <pre>{@code
 * LayerFreezingConfig top2 = LayerFreezingConfig.topLayers(2);
 * }</pre>
 */
public final class LayerFreezingConfig extends TunerConfig {
    private LayerFreezingConfig(Map<String, Object> fields) {
        super("LAYER_FREEZING", fields);
    }

    /** {@code num_trainable_layers}: train the top k layers of every layer stack. */
    public static LayerFreezingConfig topLayers(int k) {
        return new Builder().setPositive("num_trainable_layers", k).build();
    }

    /** {@code trainable_modules}: train the modules whose whole path matches the regular expression. */
    public static LayerFreezingConfig modulesMatching(String regex) {
        return new Builder().set("trainable_modules", regex).build();
    }

    /** Builds a {@link LayerFreezingConfig}. */
    private static final class Builder extends TunerConfig.TargetedBuilder<Builder, LayerFreezingConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LayerFreezingConfig create(Map<String, Object> fields) {
            return new LayerFreezingConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }
    }
}
