package org.peft4j.config;

import java.util.LinkedHashMap;
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
            Map<String, Object> corda = new LinkedHashMap<>();
            corda.put("corda_method", cordaMethod);
            corda.put("use_float16_for_covariance", useFloat16ForCovariance);
            set("corda_config", corda);
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
            Map<String, Object> eva = new LinkedHashMap<>();
            eva.put("rho", rho);
            eva.put("tau", tau);
            eva.put("use_label_mask", useLabelMask);
            eva.put("label_mask_value", labelMaskValue);
            eva.put("whiten", whiten);
            eva.put("adjust_scaling_factors", adjustScalingFactors);
            set("eva_config", eva);
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
            Map<String, Object> ga = new LinkedHashMap<>();
            ga.put("direction", direction);
            ga.put("scale", scale);
            ga.put("stable_gamma", stableGamma);
            set("lora_ga_config", ga);
            return set("init_lora_weights", "lora_ga");
        }

        /** {@code init_lora_weights = "lora_ga"} with PEFT's default LoraGAConfig (ArB2r, stable, gamma 16). */
        public Builder loraGaInit() {
            return loraGaInit("ArB2r", "stable", 16);
        }
    }
}
