package org.peft4j.config;

import java.util.Map;

/**
 * OFT: a block-diagonal orthogonal matrix (Cayley parametrisation) multiplies the frozen weight. PEFT's field
 * names ({@code peft_type} OFT); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class OftConfig extends TunerConfig {
    private OftConfig(Map<String, Object> fields) {
        super("OFT", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link OftConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, OftConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected OftConfig create(Map<String, Object> fields) {
            return new OftConfig(fields);
        }

        /** {@code r}: the number of blocks (0: derived from oft_block_size; set one of the two). */
        public Builder r(int r) {
            return set("r", r);
        }

        /** {@code oft_block_size}: the size of each orthogonal block (default 32; 0 when r is given). */
        public Builder oftBlockSize(int oftBlockSize) {
            return set("oft_block_size", oftBlockSize);
        }

        /** {@code module_dropout}: multiplicative dropout of whole blocks in training (default 0). */
        public Builder moduleDropout(double moduleDropout) {
            return setProbability("module_dropout", moduleDropout);
        }

        /** {@code coft}: constrained OFT: keep the rotation within eps of the identity (default false). */
        public Builder coft(boolean coft) {
            return set("coft", coft);
        }

        /** {@code eps}: the COFT radius (default 6e-5). */
        public Builder eps(double eps) {
            return set("eps", eps);
        }

        /** {@code block_share}: one block shared by all blocks of a layer (default false). */
        public Builder blockShare(boolean blockShare) {
            return set("block_share", blockShare);
        }

        /** {@code use_cayley_neumann}: approximate the Cayley inverse by a Neumann series (default true). */
        public Builder useCayleyNeumann(boolean useCayleyNeumann) {
            return set("use_cayley_neumann", useCayleyNeumann);
        }

        /** {@code num_cayley_neumann_terms}: terms of that series (default 5). */
        public Builder numCayleyNeumannTerms(int numCayleyNeumannTerms) {
            return setPositive("num_cayley_neumann_terms", numCayleyNeumannTerms);
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
