package org.peft4j.config;

import java.util.Map;

/**
 * MiSS: a shared small matrix expanded over the weight's blocks (shard sharing). PEFT's field names ({@code
 * peft_type} MISS); unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads
 * in PEFT.
 */
public final class MissConfig extends TunerConfig {
    private MissConfig(Map<String, Object> fields) {
        super("MISS", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link MissConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, MissConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected MissConfig create(Map<String, Object> fields) {
            return new MissConfig(fields);
        }

        /** {@code r}: the shard size (default 64). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code mini_r}: the mini rank of the "mini" variant (default 1). */
        public Builder miniR(int miniR) {
            return setPositive("mini_r", miniR);
        }

        /** {@code miss_dropout}: dropout on the adapter input in training (default 0). */
        public Builder missDropout(double missDropout) {
            return setProbability("miss_dropout", missDropout);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): zero (identity); false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code init_weights = "bat"}: the "bat" variant (block affine transformation). */
        public Builder batInit() {
            return set("init_weights", "bat");
        }

        /** {@code init_weights = "mini"}: the "mini" variant (a smaller shared matrix). */
        public Builder miniInit() {
            return set("init_weights", "mini");
        }
    }
}
