package org.peft4j.config;

import java.util.Map;

/**
 * The MAM adapter of He et al. (ICLR 2022) ({@code peft_type} MAM, a peft4j method HF PEFT lacks): prefix tuning on
 * every attention layer plus a scaled parallel bottleneck adapter on every FFN, trained as one adapter. The two parts
 * are given as their own configs and saved nested ({@code prefix_tuning}, {@code ffn_adapter}); a part left unset
 * takes AdapterHub's MAMConfig defaults (30 virtual tokens through a projection of width 800; a parallel adapter of
 * reduction 2, ReLU, scaling 4). The FFN part is always parallel to the FFN. See docs/methods.md.
 *
 * <pre>{@code
 * MamConfig config = MamConfig.builder()
 *         .prefixTuning(PrefixTuningConfig.builder().numVirtualTokens(30).prefixProjection(true).build())
 *         .ffnAdapter(BottleneckConfig.parallel().reductionFactor(4).build())
 *         .build();
 * }</pre>
 */
public final class MamConfig extends TunerConfig {
    private MamConfig(Map<String, Object> fields) {
        super("MAM", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link MamConfig} from the configs of its two parts. */
    public static final class Builder extends TunerConfig.Builder<Builder, MamConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected MamConfig create(Map<String, Object> fields) {
            return new MamConfig(fields);
        }

        /** {@code prefix_tuning}: the prefix-tuning part (its num_virtual_tokens, projection, init). */
        public Builder prefixTuning(PrefixTuningConfig prefix) {
            return setPart("prefix_tuning", prefix);
        }

        /**
         * {@code ffn_adapter}: the bottleneck part (its width, scaling, non-linearity, leave_out, ...); a placement
         * other than parallel to the FFN is refused when the adapter is added.
         */
        public Builder ffnAdapter(BottleneckConfig adapter) {
            return setPart("ffn_adapter", adapter);
        }

        /** {@code modules_to_save}: modules trained in full and saved with the adapter (e.g. "classifier"). */
        public Builder modulesToSave(String... names) {
            return setNames("modules_to_save", names);
        }
    }
}
