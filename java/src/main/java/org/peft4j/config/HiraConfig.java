package org.peft4j.config;

import java.util.Map;

/**
 * HiRA: a Hadamard high-rank update, the base weight modulated elementwise by a rank-r product B A (Linear, GPT-2
 * Conv1D and Embedding layers). PEFT's field names ({@code peft_type} HIRA); unset fields take PEFT's defaults in the
 * core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class HiraConfig extends TunerConfig {
    private HiraConfig(Map<String, Object> fields) {
        super("HIRA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link HiraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, HiraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected HiraConfig create(Map<String, Object> fields) {
            return new HiraConfig(fields);
        }

        /** {@code r}: the rank of the modulation B A (default 32). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code rank_pattern}: per-module r. */
        public Builder rankPattern(Map<String, Integer> rankPattern) {
            return setPattern("rank_pattern", rankPattern);
        }

        /** {@code hira_dropout}: dropout on the adapter's input. */
        public Builder hiraDropout(double hiraDropout) {
            return setProbability("hira_dropout", hiraDropout);
        }

        /** {@code fan_in_fan_out}: true for GPT-2's Conv1D ([in, out] weights). */
        public Builder fanInFanOut(boolean fanInFanOut) {
            return set("fan_in_fan_out", fanInFanOut);
        }

        /** {@code init_weights}: true: B = 0 (an embedding's A = 0), the identity; false: A and B random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code init_weights = "gaussian"}: A ~ N(0, 1/r), B = 0. */
        public Builder gaussianInit() {
            return set("init_weights", "gaussian");
        }
    }
}
