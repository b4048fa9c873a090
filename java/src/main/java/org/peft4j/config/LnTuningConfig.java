package org.peft4j.config;

import java.util.Map;

/**
 * LN tuning: the target layer norms are trained (copies saved with the adapter), everything else frozen. PEFT's
 * field names ({@code peft_type} LN_TUNING); unset fields take PEFT's defaults in the core, so the saved {@code
 * adapter_config.json} loads in PEFT.
 */
public final class LnTuningConfig extends TunerConfig {
    private LnTuningConfig(Map<String, Object> fields) {
        super("LN_TUNING", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LnTuningConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.TargetedBuilder<Builder, LnTuningConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LnTuningConfig create(Map<String, Object> fields) {
            return new LnTuningConfig(fields);
        }

        /** {@code exclude_modules}: names never adapted. */
        public Builder excludeModules(String... excludeModules) {
            return setNames("exclude_modules", excludeModules);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... modulesToSave) {
            return setNames("modules_to_save", modulesToSave);
        }
    }
}
