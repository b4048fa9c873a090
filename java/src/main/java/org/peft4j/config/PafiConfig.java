package org.peft4j.config;

import java.util.Map;

/**
 * PaFi ({@code peft_type} PAFI, a peft4j method): a sparse mask fixed before training — the k entries of the targeted
 * weights with the smallest magnitude (or, with {@code maskType("fisher")}, the smallest Fisher information over
 * calibration examples given to {@link org.peft4j.PeftModel#create(org.peft4j.BaseModel, String, AdapterConfig, long, org.peft4j.TrainingData)}) — and
 * only those entries train. The saved adapter holds the k values (and a Fisher mask's indices). See docs/methods.md.
 */
public final class PafiConfig extends TunerConfig {
    private PafiConfig(Map<String, Object> fields) {
        super("PAFI", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PafiConfig}; each setter maps to the field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, PafiConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PafiConfig create(Map<String, Object> fields) {
            return new PafiConfig(fields);
        }

        /** {@code k}: the number of trainable entries (default: BitFit's count on the model, its bias entries). */
        public Builder k(int k) {
            return setPositive("k", k);
        }

        /** {@code mask_type}: "magnitude" (the default, from the weights alone) or "fisher" (needs calibration data). */
        public Builder maskType(String maskType) {
            return set("mask_type", maskType);
        }
    }
}
