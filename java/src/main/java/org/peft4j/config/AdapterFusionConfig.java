package org.peft4j.config;

import java.util.List;
import java.util.Map;
import org.peft4j.PeftException;

/**
 * AdapterFusion over trained bottleneck adapters ({@code peft_type} BOTTLENECK with {@code fusion}): attention with
 * trained query/key/value over the fused adapters' outputs, the fused adapters frozen. Add or load the fused adapters
 * first, then the fusion under its own name with the same placement; see docs/methods.md.
 *
 * <pre>{@code
 * model.addAdapter("fusion", AdapterFusionConfig.of("task_a", "task_b").build());
 * model.setAdapter("fusion");
 * }</pre>
 */
public final class AdapterFusionConfig extends TunerConfig {
    private AdapterFusionConfig(Map<String, Object> fields) {
        super("BOTTLENECK", fields);
    }

    /** A fusion of the named adapters (at least two), placed after the FFN. */
    public static Builder of(String... adapters) {
        if (adapters.length < 2) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                    "AdapterFusion needs at least two adapters, got " + adapters.length);
        }
        return new Builder().set("fusion", List.of(adapters));
    }

    /** Builds an {@link AdapterFusionConfig}. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, AdapterFusionConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected AdapterFusionConfig create(Map<String, Object> fields) {
            return new AdapterFusionConfig(fields);
        }

        @Override
        protected boolean requiresTargetModules() {
            return false;
        }

        /** {@code mh_adapter}: fuse after the attention too (the fused adapters must be there). */
        public Builder mhAdapter(boolean on) {
            return set("mh_adapter", on);
        }

        /** {@code output_adapter}: fuse after the FFN (default true). */
        public Builder outputAdapter(boolean on) {
            return set("output_adapter", on);
        }

        /** {@code leave_out}: layers without fusion (as the fused adapters). */
        public Builder leaveOut(int... layers) {
            return setInts("leave_out", layers);
        }
    }
}
