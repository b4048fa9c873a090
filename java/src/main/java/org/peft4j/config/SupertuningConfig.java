package org.peft4j.config;

import java.util.Map;

/**
 * Super-Tuning: a sparse support of the weight's largest (or smallest) magnitudes trains, optionally with a LoRA
 * update on top ("Supra", {@code r} set). PEFT's field names ({@code peft_type} SUPERTUNING); unset fields take PEFT's
 * defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class SupertuningConfig extends TunerConfig {
    private SupertuningConfig(Map<String, Object> fields) {
        super("SUPERTUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link SupertuningConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, SupertuningConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected SupertuningConfig create(Map<String, Object> fields) {
            return new SupertuningConfig(fields);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }

        /** {@code sparsity}: the fraction of each weight's entries that stays frozen, in [0, 1) (default 0.99). */
        public Builder sparsity(double sparsity) {
            return setProbability("sparsity", sparsity);
        }

        /** {@code select_top}: true (the default): the largest magnitudes train; false: the smallest. */
        public Builder selectTop(boolean selectTop) {
            return set("select_top", selectTop);
        }

        /** {@code r}: the rank of the LoRA part ("Supra"); unset: the sparse support alone. */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code lora_alpha}: the LoRA part's alpha (scaling alpha / r; default 2·r). */
        public Builder loraAlpha(double loraAlpha) {
            return set("lora_alpha", loraAlpha);
        }

        /** {@code lora_dropout}: dropout on the LoRA part's input in training (default 0). */
        public Builder loraDropout(double loraDropout) {
            return setProbability("lora_dropout", loraDropout);
        }

        /** {@code init_weights}: true (the default): zero values and B = 0, the identity; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code save_precomputed_indices}: false: the support is recomputed from the base weight on load. */
        public Builder savePrecomputedIndices(boolean savePrecomputedIndices) {
            return set("save_precomputed_indices", savePrecomputedIndices);
        }
    }
}
