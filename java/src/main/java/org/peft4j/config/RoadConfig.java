package org.peft4j.config;

import java.util.Map;

/**
 * RoAd: learned 2×2 rotations (with scales) of output-feature pairs. PEFT's field names ({@code peft_type} ROAD);
 * unset fields take PEFT's defaults in the core, so the saved {@code adapter_config.json} loads in PEFT.
 */
public final class RoadConfig extends TunerConfig {
    private RoadConfig(Map<String, Object> fields) {
        super("ROAD", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link RoadConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, RoadConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected RoadConfig create(Map<String, Object> fields) {
            return new RoadConfig(fields);
        }

        /** {@code variant}: "road_1" (one angle and scale per pair, the default), "road_2" or "road_4". */
        public Builder variant(String variant) {
            return set("variant", variant);
        }

        /** {@code group_size}: the size of the feature groups whose halves are paired (default 64). */
        public Builder groupSize(int groupSize) {
            return setPositive("group_size", groupSize);
        }

        /** {@code init_weights}: true (the default): identity rotations; false: random. */
        public Builder initWeights(boolean initWeights) {
            return set("init_weights", initWeights);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }
    }
}
