package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * Lily: low-rank adapters interconnected across layers — an A shared by stride_A consecutive layers of a target, and
 * num_B B experts shared by all its layers, mixed by each layer's router (Linear layers; no merge). PEFT's field names
 * ({@code peft_type} LILY); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json}
 * loads in PEFT.
 */
public final class LilyConfig extends TunerConfig {
    private LilyConfig(Map<String, Object> fields) {
        super("LILY", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LilyConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, LilyConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LilyConfig create(Map<String, Object> fields) {
            return new LilyConfig(fields);
        }

        /** {@code r}: the rank of every A and B (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code stride_A}: how many consecutive layers of a target share one A (default 1). */
        public Builder strideA(int strideA) {
            return setPositive("stride_A", strideA);
        }

        /** {@code num_B}: the number of B experts each target's layers share, at least 2 (default 2). */
        public Builder numB(int numB) {
            if (numB < 2) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "num_B must be at least 2, got " + numB);
            }
            return set("num_B", numB);
        }

        /** {@code scaling}: the factor on the update (default 1.0). */
        public Builder scaling(double scaling) {
            return set("scaling", scaling);
        }

        /** {@code init_weights}: true: B = 0, the adapter starts as the identity; false: B random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
