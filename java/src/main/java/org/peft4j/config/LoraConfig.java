package org.peft4j.config;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.peft4j.PeftException;

/**
 * LoRA's config with PEFT's field names ({@code LoraConfig} in PEFT). Fields left unset take PEFT's defaults in the
 * core, so the saved {@code adapter_config.json} loads in PEFT.
 *
 * <pre>{@code
 * LoraConfig config = LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "v_proj").build();
 * }</pre>
 */
public final class LoraConfig extends TunerConfig {
    private LoraConfig(Map<String, Object> fields) {
        super("LORA", fields);
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link LoraConfig}; each setter maps to the PEFT field named in its doc. */
    public static final class Builder extends TunerConfig.LayerSelectingBuilder<Builder, LoraConfig> {
        @Override
        protected Builder self() {
            return this;
        }

        @Override
        protected LoraConfig create(Map<String, Object> fields) {
            return new LoraConfig(fields);
        }

        /** {@code r}: the rank (default 8). */
        public Builder r(int r) {
            return setPositive("r", r);
        }

        /** {@code lora_alpha}: the scaling numerator, scaling = lora_alpha / r (default 8). */
        public Builder loraAlpha(double alpha) {
            return set("lora_alpha", alpha);
        }

        /** {@code lora_dropout} on the LoRA input during training (default 0). */
        public Builder loraDropout(double p) {
            return setProbability("lora_dropout", p);
        }

        /** {@code use_rslora}: scaling = lora_alpha / sqrt(r). */
        public Builder useRslora(boolean on) {
            return set("use_rslora", on);
        }

        /** {@code use_dora}: weight-decomposed LoRA (a learned magnitude per output row). */
        public Builder useDora(boolean on) {
            return set("use_dora", on);
        }

        /** {@code bias}: "none", "all" or "lora_only" (which biases train with the adapter). */
        public Builder bias(String bias) {
            return set("bias", bias);
        }

        /** {@code rank_pattern}: per-module ranks, keys matched as PEFT's get_pattern_key does. */
        public Builder rankPattern(Map<String, Integer> pattern) {
            return setPattern("rank_pattern", pattern);
        }

        /** {@code alpha_pattern}: per-module lora_alpha. */
        public Builder alphaPattern(Map<String, Double> pattern) {
            return setPattern("alpha_pattern", pattern);
        }

        /** {@code init_lora_weights}: true (B = 0, the default) or false (random A and B). */
        public Builder initLoraWeights(boolean init) {
            return set("init_lora_weights", init);
        }

        /**
         * {@code init_lora_weights} by PEFT's name: "gaussian", "pissa", "pissa_niter_K", "olora", "orthogonal",
         * "mica", "corda", "eva" or "lora_ga" (the setters below name each and set its sub-config).
         */
        public Builder initLoraWeights(String init) {
            return set("init_lora_weights", init);
        }

        /** {@code init_lora_weights = "gaussian"}: A from N(0, 1/r), B = 0. */
        public Builder gaussianInit() {
            return set("init_lora_weights", "gaussian");
        }

        /**
         * {@code init_lora_weights = "pissa"} (PiSSA): the r principal singular triplets of each weight move into A and
         * B, and the base keeps the residual W − s·B·A. Save the adapter right after creating it and pass that
         * directory to {@link org.peft4j.PeftModel#save(java.nio.file.Path, String, java.nio.file.Path)} after training for a plain
         * LoRA that applies to the untouched base.
         */
        public Builder pissaInit() {
            return set("init_lora_weights", "pissa");
        }

        /** {@code init_lora_weights = "pissa_niter_<niter>"}: PiSSA by a randomised SVD with niter subspace iterations. */
        public Builder pissaInit(int niter) {
            if (niter < 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "pissa niter must be >= 0, got " + niter);
            }
            return set("init_lora_weights", "pissa_niter_" + niter);
        }

        /** {@code init_lora_weights = "olora"} (OLoRA): A and B from the QR factors of each weight, the base keeps the rest. */
        public Builder oloraInit() {
            return set("init_lora_weights", "olora");
        }

        /** {@code init_lora_weights = "orthogonal"}: A and B from one random orthogonal matrix, B·A = 0 (r even). */
        public Builder orthogonalInit() {
            return set("init_lora_weights", "orthogonal");
        }

        /** {@code init_lora_weights = "mica"} (MiCA): B frozen on the r minor left singular vectors, A = 0 and trained. */
        public Builder micaInit() {
            return set("init_lora_weights", "mica");
        }

        /**
         * {@code init_lora_weights = "corda"} with {@code corda_config.corda_method} "ipm" (the largest components of
         * W·C, C the covariance of each layer's inputs over the initialisation data) or "kpm" (the smallest); the base
         * keeps the residual. The data is passed when the adapter is made
         * ({@link org.peft4j.PeftModel#create(org.peft4j.BaseModel, String, AdapterConfig, long,
         * org.peft4j.TrainingData, long, long, long)}).
         */
        public Builder cordaInit(String cordaMethod, boolean useFloat16ForCovariance) {
            set("corda_config", ordered(
                    "corda_method", cordaMethod,
                    "use_float16_for_covariance", useFloat16ForCovariance));
            return set("init_lora_weights", "corda");
        }

        /** {@code init_lora_weights = "corda"} with PEFT's default CordaConfig (IPM). */
        public Builder cordaInit() {
            return cordaInit("ipm", false);
        }

        /**
         * {@code init_lora_weights = "eva"} (EVA) with {@code eva_config}: A from the incremental SVD of each layer's
         * inputs over the initialisation data, B = 0, the rank budget redistributed by explained variance (a layer's
         * rank at most {@code rho}·r; {@code tau} the convergence threshold of the components' cosine similarity;
         * {@code useLabelMask}: positions whose label is {@code labelMaskValue} left out; {@code whiten}: components
         * divided by √σ; {@code adjustScalingFactors}: lora_alpha scaled by new rank / r).
         */
        public Builder evaInit(double rho, double tau, boolean useLabelMask, long labelMaskValue, boolean whiten,
                               boolean adjustScalingFactors) {
            set("eva_config", ordered(
                    "rho", rho,
                    "tau", tau,
                    "use_label_mask", useLabelMask,
                    "label_mask_value", labelMaskValue,
                    "whiten", whiten,
                    "adjust_scaling_factors", adjustScalingFactors));
            return set("init_lora_weights", "eva");
        }

        /** {@code init_lora_weights = "eva"} with PEFT's default EvaConfig (rho 2, tau 0.99, label mask -100). */
        public Builder evaInit() {
            return evaInit(2.0, 0.99, true, -100, false, true);
        }

        /**
         * {@code init_lora_weights = "lora_ga"} (LoRA-GA) with {@code lora_ga_config}: A and B from the SVD of each
         * layer's mean gradient over the initialisation data; {@code direction} "ArBr", "A2rBr", "ArB2r" or "random",
         * {@code scale} "stable" (with {@code stableGamma}), "weight_svd", "gd_scale" or "unit"; the base keeps the
         * residual.
         */
        public Builder loraGaInit(String direction, String scale, int stableGamma) {
            set("lora_ga_config", ordered(
                    "direction", direction,
                    "scale", scale,
                    "stable_gamma", stableGamma));
            return set("init_lora_weights", "lora_ga");
        }

        /** {@code init_lora_weights = "lora_ga"} with PEFT's default LoraGAConfig (ArB2r, stable, gamma 16). */
        public Builder loraGaInit() {
            return loraGaInit("ArB2r", "stable", 16);
        }

        /** {@code lora_bias}: B gets a trained bias, merged into the base layer's bias (not with DoRA). */
        public Builder loraBias(boolean on) {
            return set("lora_bias", on);
        }

        /**
         * {@code alora_invocation_tokens} (aLoRA): the adapter acts only from the last occurrence of these token ids
         * on, so the base model's KV cache of the context before them serves it; it does not merge.
         */
        public Builder aloraInvocationTokens(int... tokens) {
            return setInts("alora_invocation_tokens", tokens);
        }

        /**
         * {@code use_bdlora} (BD-LoRA): A block-diagonal on the modules matching {@code targetModulesBdA}, B on those
         * matching {@code targetModulesBdB}, with {@code nblocks} blocks; {@code matchStrict} refuses targets matching
         * neither.
         */
        public Builder useBdlora(List<String> targetModulesBdA, List<String> targetModulesBdB, int nblocks,
                boolean matchStrict) {
            if (nblocks <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "use_bdlora.nblocks must be positive, got " + nblocks);
            }
            return set("use_bdlora", ordered(
                    "target_modules_bd_a", List.copyOf(targetModulesBdA),
                    "target_modules_bd_b", List.copyOf(targetModulesBdB),
                    "nblocks", nblocks,
                    "match_strict", matchStrict));
        }

        /**
         * {@code kasa_config} (KaSA): the base weight loses its r smallest singular components and the update is
         * B·diag(lora_diag)·A; {@code beta} and {@code gamma} weigh its regularisers (PEFT's defaults 1e-4, 1e-3).
         */
        public Builder kasaConfig(double beta, double gamma) {
            return set("kasa_config", Map.of("beta", beta, "gamma", gamma));
        }

        /**
         * {@code velora_config} (VeLoRA): A's weight gradient from inputs compressed to {@code numGroups} groups
         * (default 64), scaled by {@code scale} (1.0); {@code initType} "batch_average" (the default),
         * "batch_average_once" or "random".
         */
        public Builder veloraConfig(int numGroups, double scale, String initType) {
            if (numGroups <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "velora_config.num_groups must be positive, got " + numGroups);
            }
            return set("velora_config", Map.of("num_groups", numGroups, "scale", scale, "init_type", initType));
        }

        /**
         * {@code monteclora_config} (MonteCLoRA): in training, A is the weighted mean of {@code numSamples} (default
         * 8) Monte Carlo perturbations scaled by {@code sampleScaler} (1e-4); {@code useEntropy} (false),
         * {@code dirichletPrior} (0.1), {@code klLossWeight} (1e-5) and {@code bufferSize} (150) as PEFT's.
         */
        public Builder montecloraConfig(int numSamples, boolean useEntropy, double dirichletPrior,
                double sampleScaler, double klLossWeight, int bufferSize) {
            if (numSamples <= 0 || bufferSize <= 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "monteclora_config.num_samples and buffer_size must be positive, got " + numSamples + " and "
                                + bufferSize);
            }
            return set("monteclora_config", ordered(
                    "num_samples", numSamples,
                    "use_entropy", useEntropy,
                    "dirichlet_prior", dirichletPrior,
                    "sample_scaler", sampleScaler,
                    "kl_loss_weight", klLossWeight,
                    "buffer_size", bufferSize));
        }

        /**
         * {@code arrow_config} (Arrow): a router among the task adapters the model already carries (and, with
         * {@code useGks}, GenKnowSub's general adapters), mixing the {@code topK} experts nearest each token at
         * {@code routerTemperature}; {@code rngSeed} (null: unseeded) seeds the prototypes' power iteration.
         */
        public Builder arrowConfig(int topK, double routerTemperature, boolean useGks, List<String> taskAdapterNames,
                List<String> gksAdapterNames, Integer rngSeed) {
            return set("arrow_config", ordered(
                    "top_k", topK,
                    "router_temperature", routerTemperature,
                    "use_gks", useGks,
                    "task_adapter_names", List.copyOf(taskAdapterNames),
                    "gks_adapter_names", List.copyOf(gksAdapterNames),
                    "rng_seed", rngSeed));
        }

        /**
         * {@code layer_replication}: the decoder layer stack rebuilt from {@code [start, end)} ranges, each
         * {@code int[2]}; repeated layers share their base weights and get adapters of their own (no merging).
         */
        public Builder layerReplication(int[]... ranges) {
            List<List<Integer>> out = new java.util.ArrayList<>();
            for (int[] range : ranges) {
                if (range.length != 2) {
                    throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                            "layer_replication ranges are [start, end] pairs, got " + java.util.Arrays.toString(range));
                }
                out.add(List.of(range[0], range[1]));
            }
            return set("layer_replication", out);
        }

        /**
         * {@code target_parameters}: LoRA on 2-D parameters named by exact name or dotted suffix (e.g.
         * "self_attn.q_proj.weight") rather than on modules; pair with {@code targetModules()} (none) unless other
         * modules are targeted too.
         */
        public Builder targetParameters(String... names) {
            return setNames("target_parameters", names);
        }

        /**
         * {@code trainable_token_indices} (list form): these rows of the input embedding train beside LoRA (saved as
         * {@code token_adapter.trainable_tokens_delta}); under tied embeddings the lm_head follows the same rows.
         */
        public Builder trainableTokenIndices(int... tokens) {
            return setInts("trainable_token_indices", tokens);
        }

        /**
         * {@code trainable_token_indices} (dict form): the rows to train per module name (a suffix of the module's
         * path, e.g. "embed_tokens", "lm_head").
         */
        public Builder trainableTokenIndices(Map<String, List<Integer>> tokensByModule) {
            return set("trainable_token_indices", new LinkedHashMap<>(tokensByModule));
        }

        /**
         * {@code ensure_weight_tying}: under tie_word_embeddings, modules tied to the input embedding share its adapter
         * (LoRA factors transposed when the embedding is in target_modules, one copy in modules_to_save, the same rows
         * with trainable_token_indices, whose indices must then agree).
         */
        public Builder ensureWeightTying(boolean on) {
            return set("ensure_weight_tying", on);
        }

        /** A sub-config's fields in the order given (key, value, key, value, ...; values may be null). */
        private static Map<String, Object> ordered(Object... keysAndValues) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (int i = 0; i < keysAndValues.length; i += 2) {
                out.put((String) keysAndValues[i], keysAndValues[i + 1]);
            }
            return out;
        }
    }
}
