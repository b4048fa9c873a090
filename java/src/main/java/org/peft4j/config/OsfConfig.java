package org.peft4j.config;

import java.util.Map;
import org.peft4j.PeftException;

/**
 * OSF: the weight's SVD split at {@code effective_rank}; the low singular directions train, their gradients projected
 * orthogonally to the frozen top ones. PEFT's field names ({@code peft_type} OSF); unset fields take PEFT's defaults
 * in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class OsfConfig extends TunerConfig {
    private OsfConfig(Map<String, Object> fields) {
        super("OSF", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link OsfConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, OsfConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected OsfConfig create(Map<String, Object> fields) {
            return new OsfConfig(fields);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }

        /** {@code effective_rank}: the frozen top singular directions (default: half the smaller dimension). */
        public Builder effectiveRank(int effectiveRank) {
            return setPositive("effective_rank", effectiveRank);
        }

        /** {@code effective_rank} as a fraction in (0, 1] of each weight's smaller dimension. */
        public Builder effectiveRankFraction(double fraction) {
            if (!(fraction > 0 && fraction <= 1)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "effective_rank fraction must be in (0, 1], got " + fraction);
            }
            return set("effective_rank", fraction);
        }

        /** {@code rank_pattern}: regex (searched in the module path) to effective_rank, integer or fraction. */
        public Builder rankPattern(Map<String, ? extends Number> rankPattern) {
            return setPattern("rank_pattern", rankPattern);
        }

        /** {@code init_weights}: true (the default): the trained factors start as the SVD's, the identity. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }
    }
}
