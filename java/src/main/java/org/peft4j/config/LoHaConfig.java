package org.peft4j.config;

import java.util.Map;

/**
 * LoHa (low-rank Hadamard product, LyCORIS): ΔW = (B1·A1) ⊙ (B2·A2) · alpha / r. PEFT's field names ({@code
 * peft_type} LOHA); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads
 * in PEFT.
 */
public final class LoHaConfig extends TunerConfig {
    private LoHaConfig(Map<String, Object> fields) {
        super("LOHA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LoHaConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends LycorisBuilder<Builder, LoHaConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LoHaConfig create(Map<String, Object> fields) {
            return new LoHaConfig(fields);
        }

        /** {@code r}: the rank of each factor pair (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code init_weights}: true (the default): the second factor pair starts at zero, so the adapter starts as the identity; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
