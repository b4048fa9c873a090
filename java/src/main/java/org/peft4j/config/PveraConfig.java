package org.peft4j.config;

import java.util.Map;

/**
 * PVeRA (probabilistic VeRA): VeRA's shared projections and per-layer vectors, with d read as the means and
 * log-variances of a latent that training samples. PEFT's field names ({@code peft_type} PVERA); unset fields take
 * PEFT's defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class PveraConfig extends TunerConfig {
    private PveraConfig(Map<String, Object> fields) {
        super("PVERA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link PveraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends VeraBuilder<Builder, PveraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected PveraConfig create(Map<String, Object> fields) {
            return new PveraConfig(fields);
        }

        /** {@code pvera_dropout}: dropout on the adapter input in training (default 0). */
        public Builder pveraDropout(double pveraDropout) {
            return setProbability("pvera_dropout", pveraDropout);
        }

        /** {@code sample_at_inference}: sample the latent in eval mode too (default false: its mean). */
        public Builder sampleAtInference(boolean sampleAtInference) {
            return set("sample_at_inference", sampleAtInference);
        }

        /** {@code generator_seed}: the seed of the adapter's own noise generator (default: the global one). */
        public Builder generatorSeed(int generatorSeed) {
            return set("generator_seed", generatorSeed);
        }
    }
}
