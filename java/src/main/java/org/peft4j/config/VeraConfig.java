package org.peft4j.config;

import java.util.Map;

/**
 * VeRA: shared frozen random projections A and B, and trainable scaling vectors d and b per layer. PEFT's field
 * names ({@code peft_type} VERA); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class VeraConfig extends TunerConfig {
    private VeraConfig(Map<String, Object> fields) {
        super("VERA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link VeraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, VeraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected VeraConfig create(Map<String, Object> fields) {
            return new VeraConfig(fields);
        }

        /** {@code r}: the rank of the shared projections (default 256). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code projection_prng_key}: the seed PEFT draws the shared projections from (default 0). */
        public Builder projectionPrngKey(int projectionPrngKey) {
            return set("projection_prng_key", projectionPrngKey);
        }

        /** {@code save_projection}: save vera_A and vera_B with the adapter (default true). */
        public Builder saveProjection(boolean saveProjection) {
            return set("save_projection", saveProjection);
        }

        /** {@code vera_dropout}: dropout on the adapter input in training (default 0). */
        public Builder veraDropout(double veraDropout) {
            return setProbability("vera_dropout", veraDropout);
        }

        /** {@code d_initial}: initial value of the d vector (default 0.1). */
        public Builder dInitial(double dInitial) {
            return set("d_initial", dInitial);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): b starts at zero (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
