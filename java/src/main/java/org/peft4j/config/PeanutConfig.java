package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * PEANuT: a weight-aware ΔW computed from the frozen weight by a small network (A, {@code depth} encoder and decoder
 * layers with skip connections, B). PEFT's field names ({@code peft_type} PEANUT); unset fields take PEFT's defaults
 * in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class PeanutConfig extends TunerConfig {
    private PeanutConfig(Map<String, Object> fields) {
        super("PEANUT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PeanutConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, PeanutConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PeanutConfig create(Map<String, Object> fields) {
            return new PeanutConfig(fields);
        }

        /** {@code r}: the network's hidden width (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code depth}: encoder (and decoder) layers between A and B (default 0). */
        public Builder depth(int depth) {
            if (depth < 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "depth must be >= 0, got " + depth);
            }
            return set("depth", depth);
        }

        /** {@code act_fn}: the activation, a transformers ACT2FN name (default "relu"). */
        public Builder actFn(String actFn) {
            return set("act_fn", actFn);
        }

        /** {@code scaling}: the factor on ΔW (default 1.0). */
        public Builder scaling(double scaling) {
            return set("scaling", scaling);
        }

        /** {@code init_weights}: true (the default): B = 0, the identity; false: every weight Kaiming-uniform. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
