package org.peft4j.config;

import java.util.Map;

/**
 * C3A: a block-circular convolution kernel per layer (ΔW is block-circulant), computed with FFTs. PEFT's field
 * names ({@code peft_type} C3A); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class C3aConfig extends TunerConfig {
    private C3aConfig(Map<String, Object> fields) {
        super("C3A", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link C3aConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerIndexBuilder<Builder, C3aConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected C3aConfig create(Map<String, Object> fields) {
            return new C3aConfig(fields);
        }

        /** {@code block_size}: the circulant block size; must divide the layer's in and out features (default 256). */
        public Builder blockSize(int blockSize) {
            return setPositive("block_size", blockSize);
        }

        /** {@code block_size_pattern}: per-module block_size. */
        public Builder blockSizePattern(Map<String, Integer> blockSizePattern) {
            return setPattern("block_size_pattern", blockSizePattern);
        }

        /** {@code bias}: "none" or "all": whether the model's biases train with the adapter. */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code init_weights}: "xavier_uniform" (the default), "kaiming_uniform" or "gaussian". */
        public Builder initWeights(String initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code init_weights}: true: zero kernels, the adapter starts as the identity; false: xavier_uniform. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
