package org.peft4j.config;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.peft4j.PeftException;

/**
 * AdapterHub's Average block over trained bottleneck adapters ({@code peft_type} BOTTLENECK with {@code average}): at
 * every adapted sublayer the weighted sum of the outputs each adapter alone would give. It has no tensors of its own.
 * Add or load the averaged adapters first, then the average under its own name with the same placement; see
 * docs/methods.md.
 *
 * <pre>{@code
 * model.addAdapter("avg", AdapterAverageConfig.of("task_a", "task_b").weights(0.7, 0.3).build());
 * model.setAdapter("avg");
 * }</pre>
 */
public final class AdapterAverageConfig extends TunerConfig {
    private AdapterAverageConfig(Map<String, Object> fields) {
        super("BOTTLENECK", fields);
    }

    /** An average of the named adapters (at least two), equal weights, placed after the FFN. */
    public static Builder of(String... adapters) {
        if (adapters.length < 2) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "Average needs at least two adapters, got " + adapters.length);
        }
        return new Builder(adapters.length).set("average", List.of(adapters));
    }

    /** Builds an {@link AdapterAverageConfig}. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, AdapterAverageConfig> {
        private final int adapters;

        private Builder(int adapters) {
            this.adapters = adapters;
        }

        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected AdapterAverageConfig create(Map<String, Object> fields) {
            return new AdapterAverageConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code average_weights}: one weight per adapter, divided by their sum unless normalizeWeights(false). */
        public Builder weights(double... weights) {
            if (weights.length != adapters) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        adapters + " adapters but " + weights.length + " weights");
            }
            return set("average_weights", Arrays.stream(weights).boxed().toList());
        }

        /** {@code normalize_weights} (default true); unnormalised weights need sequential adapters. */
        public Builder normalizeWeights(boolean on) {
            return set("normalize_weights", on);
        }

        /** {@code is_parallel}: average parallel adapters (they must all be parallel). */
        public Builder isParallel(boolean on) {
            return set("is_parallel", on);
        }

        /** {@code mh_adapter}: average after the attention too (the averaged adapters must be there). */
        public Builder mhAdapter(boolean on) {
            return set("mh_adapter", on);
        }

        /** {@code leave_out}: layers without the average (as the averaged adapters). */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }
    }
}
