package org.peft4j.config;

import java.util.Map;

/**
 * BOFT: butterfly-factorised orthogonal fine-tuning; a product of block-diagonal orthogonal factors multiplies the
 * frozen weight. PEFT's field names ({@code peft_type} BOFT); unset fields take PEFT's defaults in the core, so
 * the saved {@code adapter_config.json} loads in PEFT.
 */
public final class BoftConfig extends TunerConfig {
    private BoftConfig(Map<String, Object> fields) {
        super("BOFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link BoftConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, BoftConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected BoftConfig create(Map<String, Object> fields) {
            return new BoftConfig(fields);
        }

        /** {@code boft_block_size}: the block size (default 4; 0 when boft_block_num is given). */
        public Builder boftBlockSize(int boftBlockSize) {
            return set("boft_block_size", boftBlockSize);
        }

        /** {@code boft_block_num}: the number of blocks (default 0: derived from the block size). */
        public Builder boftBlockNum(int boftBlockNum) {
            return set("boft_block_num", boftBlockNum);
        }

        /** {@code boft_n_butterfly_factor}: the number of butterfly factors (default 1). */
        public Builder boftNButterflyFactor(int boftNButterflyFactor) {
            return setPositive("boft_n_butterfly_factor", boftNButterflyFactor);
        }

        /** {@code boft_dropout}: multiplicative dropout of whole blocks in training (default 0). */
        public Builder boftDropout(double boftDropout) {
            return setProbability("boft_dropout", boftDropout);
        }

        /** {@code fan_in_fan_out}: true for layers that store their weight as [in, out] (GPT-2's Conv1D). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: true (the default): the rotation starts at the identity; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
