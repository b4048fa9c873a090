package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.peft4j.config.AdaLoraConfig;
import org.peft4j.config.AdamssConfig;
import org.peft4j.config.AdapterBiasConfig;
import org.peft4j.config.AdapterConfig;
import org.peft4j.config.AdaptionPromptConfig;
import org.peft4j.config.BeftConfig;
import org.peft4j.config.BitFitConfig;
import org.peft4j.config.BoftConfig;
import org.peft4j.config.BottleneckConfig;
import org.peft4j.config.C3aConfig;
import org.peft4j.config.DeftConfig;
import org.peft4j.config.DeloraConfig;
import org.peft4j.config.DiffPruningConfig;
import org.peft4j.config.FourierFtConfig;
import org.peft4j.config.FrodConfig;
import org.peft4j.config.GloraConfig;
import org.peft4j.config.GraloraConfig;
import org.peft4j.config.HiraConfig;
import org.peft4j.config.HiwiConfig;
import org.peft4j.config.HraConfig;
import org.peft4j.config.IA3Config;
import org.peft4j.config.IntrinsicDimensionConfig;
import org.peft4j.config.LayerFreezingConfig;
import org.peft4j.config.LilyConfig;
import org.peft4j.config.LnTuningConfig;
import org.peft4j.config.LoHaConfig;
import org.peft4j.config.LoKrConfig;
import org.peft4j.config.LoraConfig;
import org.peft4j.config.MamConfig;
import org.peft4j.config.MissConfig;
import org.peft4j.config.MultiHeadParallelAdapterConfig;
import org.peft4j.config.OftConfig;
import org.peft4j.config.OsfConfig;
import org.peft4j.config.PafiConfig;
import org.peft4j.config.PeanutConfig;
import org.peft4j.config.PrefixTuningConfig;
import org.peft4j.config.PromptEncoderConfig;
import org.peft4j.config.PromptTuningConfig;
import org.peft4j.config.PsoftConfig;
import org.peft4j.config.PstConfig;
import org.peft4j.config.PveraConfig;
import org.peft4j.config.RandLoraConfig;
import org.peft4j.config.RoadConfig;
import org.peft4j.config.ShiraConfig;
import org.peft4j.config.SupertuningConfig;
import org.peft4j.config.TinyLoraConfig;
import org.peft4j.config.TrainableTokensConfig;
import org.peft4j.config.TunerConfig;
import org.peft4j.config.UniLoraConfig;
import org.peft4j.config.UniPeltConfig;
import org.peft4j.config.VbLoraConfig;
import org.peft4j.config.VeraConfig;
import org.peft4j.config.WaveFtConfig;

/**
 * Each method's Java config, built with the options of its golden case, against what PEFT wrote for that case: the
 * builder writes PEFT's field names and values, and an adapter made from it has PEFT's trainable-parameter count and
 * saves exactly PEFT's tensor names and shapes.
 */
class TunerConfigsTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    static Stream<Arguments> goldenConfigs() {
        return Stream.of(
                Arguments.of("loha_llama", LoHaConfig.builder().r(4).alpha(8).targetModules("v_proj", "q_proj")
                        .initWeights(false).build()),
                Arguments.of("lokr_llama", LoKrConfig.builder().r(4).alpha(8).decomposeFactor(-1)
                        .targetModules("v_proj", "q_proj").initWeights(false).build()),
                Arguments.of("adalora_llama", AdaLoraConfig.builder().initR(6).targetR(4).loraAlpha(8).tinit(10)
                        .tfinal(10).deltaT(1).totalStep(100).beta1(0.85).beta2(0.85).orthRegWeight(0.5)
                        .targetModules("v_proj", "q_proj").initLoraWeights(false).build()),
                Arguments.of("ia3_llama", IA3Config.builder().targetModules("v_proj", "down_proj", "k_proj")
                        .feedforwardModules("down_proj").initIa3Weights(false).build()),
                Arguments.of("ia3_gpt2", IA3Config.builder().targetModules("c_attn", "mlp.c_proj")
                        .feedforwardModules("mlp.c_proj").fanInFanOut(true).initIa3Weights(false).build()),
                Arguments.of("ia3_t5", IA3Config.builder().targetModules("wo", "v", "k").feedforwardModules("wo")
                        .taskType("SEQ_2_SEQ_LM").initIa3Weights(false).build()),
                Arguments.of("oft_llama", OftConfig.builder().oftBlockSize(8).r(0).eps(6e-5).useCayleyNeumann(true)
                        .numCayleyNeumannTerms(5).targetModules("v_proj", "q_proj").initWeights(false).build()),
                Arguments.of("boft_llama", BoftConfig.builder().boftBlockSize(8).boftNButterflyFactor(1)
                        .targetModules("v_proj", "q_proj").initWeights(false).build()),
                Arguments.of("hra_llama", HraConfig.builder().r(4).targetModules("v_proj", "q_proj")
                        .initWeights(false).build()),
                Arguments.of("road_llama", RoadConfig.builder().variant("road_1").groupSize(64)
                        .targetModules("q_proj", "o_proj").initWeights(false).build()),
                Arguments.of("vera_llama", VeraConfig.builder().r(8).dInitial(0.1).saveProjection(true)
                        .projectionPrngKey(0).targetModules("q_proj", "o_proj").initWeights(false).build()),
                Arguments.of("fourierft_llama", FourierFtConfig.builder().nFrequency(32).scaling(10.0)
                        .randomLocSeed(777).targetModules("v_proj", "q_proj").initWeights(false).build()),
                Arguments.of("randlora_llama", RandLoraConfig.builder().r(8).randloraAlpha(640).saveProjection(true)
                        .targetModules("v_proj", "q_proj").initWeights(true).build()),
                Arguments.of("shira_llama", ShiraConfig.builder().r(4).targetModules("v_proj", "q_proj")
                        .initWeights(false).build()),
                Arguments.of("c3a_llama", C3aConfig.builder().blockSize(16).targetModules("v_proj", "q_proj")
                        .initWeights(false).build()),
                Arguments.of("miss_llama", MissConfig.builder().r(4).miniR(1).targetModules("v_proj", "q_proj")
                        .initWeights(false).build()),
                Arguments.of("vblora_llama", VbLoraConfig.builder().r(4).numVectors(16).vectorLength(16).topk(2)
                        .initLogitsStd(0.1).initVectorBankBound(0.02).targetModules("v_proj", "q_proj").build()),
                Arguments.of("ln_tuning_llama", LnTuningConfig.builder()
                        .targetModules("input_layernorm", "post_attention_layernorm").build()),
                Arguments.of("trainable_tokens_llama", TrainableTokensConfig.builder().targetModules("embed_tokens")
                        .tokenIndices(3, 5, 7, 11).initWeights(false).build()));
    }

    /**
     * Every method without a row above (no golden case of its own, or one other tests check): the builder's config
     * on a golden base model ("llama", "gpt2" or "qwen2") saves and loads back to the same logits, with the method's
     * peft_type. A method is added here or above (the methods no PEFT library has: in peft4jMethodConfigs, on llama);
     * ConfigCoverageTest fails for a registered method without a row.
     */
    static Stream<Arguments> generatedConfigs() {
        return Stream.concat(Stream.of(
                Arguments.of("lora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj").build()),
                Arguments.of("lora_bias", "gpt2", LoraConfig.builder().r(4).targetModules("c_attn").loraBias(true)
                        .initLoraWeights(false).build()),
                Arguments.of("alora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .taskType("CAUSAL_LM").aloraInvocationTokens(3, 4).initLoraWeights(false).build()),
                Arguments.of("bdlora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "o_proj")
                        .useBdlora(List.of("q_proj"), List.of("o_proj"), 2, true).initLoraWeights(false).build()),
                Arguments.of("kasa", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .kasaConfig(1e-4, 1e-3).initLoraWeights(false).build()),
                Arguments.of("velora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .veloraConfig(8, 1.0, "batch_average").initLoraWeights(false).build()),
                // one sample, no perturbation: the sampler's training-mode draws leave A as it is, so the round trip
                // compares exactly
                Arguments.of("monteclora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .montecloraConfig(1, true, 0.1, 0.0, 1e-5, 150).initLoraWeights(false).build()),
                Arguments.of("layer_replication", "llama", LoraConfig.builder().r(4).targetModules("q_proj")
                        .layerReplication(new int[] {0, 2}, new int[] {1, 2}).initLoraWeights(false).build()),
                Arguments.of("target_parameters", "llama", LoraConfig.builder().r(4).targetModules()
                        .targetParameters("self_attn.q_proj.weight").initLoraWeights(false).build()),
                Arguments.of("trainable_token_indices", "qwen2", LoraConfig.builder().r(4).targetModules("q_proj")
                        .trainableTokenIndices(3, 5).initLoraWeights(false).build()),
                Arguments.of("trainable_token_indices_dict", "qwen2", LoraConfig.builder().r(4).targetModules("q_proj")
                        .trainableTokenIndices(Map.of("embed_tokens", List.of(2, 6), "lm_head", List.of(2, 6)))
                        .ensureWeightTying(true).initLoraWeights(false).build()),
                Arguments.of("ensure_weight_tying", "qwen2", LoraConfig.builder().r(4)
                        .targetModules("embed_tokens", "q_proj").ensureWeightTying(true).initLoraWeights(false).build()),
                Arguments.of("prompt_tuning", "llama",
                        PromptTuningConfig.builder().numVirtualTokens(4).randomInit().build()),
                Arguments.of("p_tuning", "llama",
                        PromptEncoderConfig.builder().numVirtualTokens(4).encoderHiddenSize(16).build()),
                Arguments.of("prefix_tuning", "llama", PrefixTuningConfig.builder().numVirtualTokens(4).build()),
                Arguments.of("adaption_prompt", "llama",
                        AdaptionPromptConfig.builder().adapterLen(4).adapterLayers(1).build()),
                Arguments.of("bottleneck", "llama", BottleneckConfig.houlsby().build()),
                Arguments.of("adapter_bias", "llama", AdapterBiasConfig.builder().build()),
                Arguments.of("bitfit", "gpt2", BitFitConfig.builder().build()),
                Arguments.of("layer_freezing", "llama", LayerFreezingConfig.topLayers(1)),
                Arguments.of("mam", "llama", MamConfig.builder().build()),
                Arguments.of("unipelt", "llama", UniPeltConfig.builder().build()),
                Arguments.of("peanut", "llama", PeanutConfig.builder().r(4).depth(1).actFn("gelu")
                        .targetModules("q_proj", "v_proj").initWeights(false).build()),
                Arguments.of("supertuning", "llama", SupertuningConfig.builder().sparsity(0.9).r(2).loraAlpha(3.0)
                        .targetModules("q_proj", "v_proj").initWeights(false).build()),
                Arguments.of("osf", "llama", OsfConfig.builder().effectiveRank(8).rankPattern(Map.of("v_proj", 0.75))
                        .targetModules("q_proj", "v_proj").initWeights(false).build()),
                Arguments.of("waveft", "gpt2", WaveFtConfig.builder().nFrequency(64).waveletFamily("db2")
                        .targetModules("c_attn", "c_proj").fanInFanOut(true).initWeights(false).build()),
                Arguments.of("beft", "qwen2", BeftConfig.builder().targetModules("q_proj", "v_proj")
                        .initWeights(false).build()),
                Arguments.of("mh_parallel_adapter", "llama",
                        MultiHeadParallelAdapterConfig.builder().bottleneckSize(4).build()),
                Arguments.of("delora", "llama", DeloraConfig.builder().r(4).deloraLambda(15)
                        .targetModules("q_proj", "v_proj", "down_proj").initWeights(false).build()),
                Arguments.of("gralora", "gpt2", GraloraConfig.builder().r(8).graloraK(4).hybridR(2).alpha(8)
                        .targetModules("c_attn", "c_proj", "c_fc").fanInFanOut(true).initWeights(false).build()),
                Arguments.of("hira", "llama", HiraConfig.builder().r(4)
                        .targetModules("q_proj", "v_proj", "embed_tokens").initWeights(false).build()),
                Arguments.of("lily", "llama", LilyConfig.builder().r(4).strideA(2).numB(2)
                        .targetModules("q_proj", "v_proj").initWeights(false).build()),
                Arguments.of("tinylora", "llama", TinyLoraConfig.builder().r(2).u(8).weightTying(0.5)
                        .targetModules("q_proj", "v_proj", "embed_tokens").uniformInit().initVBound(0.3).build()),
                Arguments.of("unilora", "gpt2", UniLoraConfig.builder().r(2).thetaDLength(300)
                        .targetModules("c_attn", "c_proj").fanInFanOut(true).saveIndices(true).initWeights(false)
                        .build()),
                Arguments.of("pvera", "llama", PveraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .initWeights(false).generatorSeed(3).build()),
                Arguments.of("deft", "gpt2", DeftConfig.builder().r(4).alpha(8).targetModules("c_attn", "c_fc")
                        .fanInFanOut(true).initWeights(false).build()),
                Arguments.of("glora", "llama", GloraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .initWeights(false).build()),
                Arguments.of("psoft", "llama", PsoftConfig.builder().r(8).psoftAlpha(16)
                        .targetModules("q_proj", "v_proj").initWeights(false).build()),
                Arguments.of("frod", "gpt2", FrodConfig.builder().targetModules("c_attn", "c_fc").fanInFanOut(true)
                        .projectionPrngKey(3).initWeights(false).build()),
                Arguments.of("adamss", "llama", AdamssConfig.builder().r(16).numSubspaces(3).subspaceRank(2)
                        .targetModules("q_proj", "v_proj").initWeights(false).build())),
                peft4jMethodConfigs().map(row -> Arguments.of(row.get()[0], "llama", row.get()[1])));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("generatedConfigs")
    void generatedConfigSavesAndLoadsBack(String name, String arch, AdapterConfig config) throws Exception {
        GoldenRoundTrip.Result result = GoldenRoundTrip.saveAndLoad(arch, config, dir);
        assertEquals(config.peftType(), result.loadedConfig().get("peft_type").asText(), name);
    }

    private static JsonNode readJson(Path file) throws IOException {
        return JSON.readTree(file.toFile());
    }

    private static Map<String, long[]> shapes(Path safetensors) {
        Map<String, long[]> out = new TreeMap<>();
        try (NamedTensors tensors = SafeTensors.read(safetensors)) {
            for (String name : tensors.names()) {
                try (Tensor t = tensors.get(name)) {
                    out.put(name, t.shape());
                }
            }
        }
        return out;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("goldenConfigs")
    void configMatchesPeftsFileAndBuildsPeftsAdapter(String caseName, TunerConfig config) throws IOException {
        Path caseDir = TestFiles.golden().resolve("cases").resolve(caseName);
        JsonNode golden = readJson(caseDir.resolve("adapter/adapter_config.json"));
        JsonNode ours = JSON.readTree(config.toJson());
        assertEquals(golden.get("peft_type").asText(), config.peftType());
        for (Iterator<Map.Entry<String, JsonNode>> it = ours.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            JsonNode want = golden.get(field.getKey());
            assertTrue(want != null, caseName + ": PEFT has no field " + field.getKey());
            JsonNode got = field.getValue();
            if (want.isArray() && got.isArray()) {  // PEFT stores target_modules as a set: order is not meaningful
                assertEquals(new java.util.TreeSet<>(JSON.convertValue(want, java.util.List.class)),
                        new java.util.TreeSet<>(JSON.convertValue(got, java.util.List.class)),
                        caseName + ": " + field.getKey());
            } else if (want.isNumber()) {
                assertEquals(want.asDouble(), got.asDouble(), 0.0, caseName + ": " + field.getKey());
            } else {
                assertEquals(want, got, caseName + ": " + field.getKey());
            }
        }

        JsonNode caseJson = readJson(caseDir.resolve("case.json"));
        Path baseDir = caseDir.resolve(caseJson.get("base_model").asText()).normalize();
        try (BaseModel base = BaseModel.load(baseDir); PeftModel model = PeftModel.create(base, "default", config)) {
            assertEquals(caseJson.get("trainable_params").asLong(), model.trainableParameterCount(), caseName);
            model.save(dir);
        }
        Map<String, long[]> want = shapes(caseDir.resolve("adapter/adapter_model.safetensors"));
        Map<String, long[]> got = shapes(dir.resolve("adapter_model.safetensors"));
        assertEquals(want.keySet(), got.keySet(), caseName + ": saved tensor names");
        for (Map.Entry<String, long[]> e : want.entrySet()) {
            assertArrayEquals(e.getValue(), got.get(e.getKey()), caseName + ": shape of " + e.getKey());
        }
    }

    /**
     * The methods without a golden case (no PEFT reference): the config class against the core's count for the same
     * JSON and against the method's count formula on the golden llama (hidden 64, FFN 128, 2 layers, q_proj 64x64,
     * v_proj 32x64, up_proj 128x64), and the config round-trips through a saved adapter.
     */
    static Stream<Arguments> peft4jMethodConfigs() {
        return Stream.of(
                Arguments.of("pafi", PafiConfig.builder().targetModules("q_proj", "v_proj").k(500).build(), 500L),
                // 2nr + r + n per weight, rows of n = 64.
                Arguments.of("hiwi", HiwiConfig.builder().r(4).targetModules("up_proj").targetParameters("weight")
                        .nonLinearity("gelu").build(), 2L * (2 * 64 * 4 + 4 + 64)),
                // r₁(n + k) + r₂(n + k) + n + k per matrix.
                Arguments.of("pst", PstConfig.builder().weightRank(4).maskRank(2).sparsity(0.5).initialWarmup(0.2)
                        .targetModules("q_proj").build(), 2L * ((4 + 2) * (64 + 64) + 64 + 64)),
                // 2·|θ| + one group gate per tensor: q and v of 2 layers.
                Arguments.of("diff_pruning", DiffPruningConfig.builder().targetModules("q_proj", "v_proj").fixmaskPct(0.01)
                        .learningRateAlpha(0.05).build(), 2L * 2 * (64 * 64 + 32 * 64) + 4),
                Arguments.of("intrinsic_dimension", IntrinsicDimensionConfig.builder().intrinsicDimension(300).said(true)
                        .projection("sparse").allLinear().build(), 300L));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("peft4jMethodConfigs")
    void peft4jMethodConfigCountsAsItsJsonAndRoundTrips(String name, TunerConfig config, long count) throws IOException {
        Path llama = TestFiles.golden().resolve("models/llama");
        try (BaseModel base = BaseModel.load(llama); PeftModel model = PeftModel.create(base, "default", config)) {
            assertEquals(count, model.trainableParameterCount(), name);
            model.save(dir);
        }
        try (BaseModel base = BaseModel.load(llama);
             PeftModel fromJson = PeftModel.create(base, "default", AdapterConfig.fromJson(config.toJson()))) {
            assertEquals(count, fromJson.trainableParameterCount(), name);
        }
        JsonNode saved = readJson(dir.resolve("adapter_config.json"));
        JsonNode ours = JSON.readTree(config.toJson());
        for (Iterator<Map.Entry<String, JsonNode>> it = ours.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            assertEquals(field.getValue(), saved.get(field.getKey()), name + ": " + field.getKey());
        }
        assertTrue(saved.get("base_fingerprints").size() > 0, name + ": the saved config names the base parameters");
        try (BaseModel base = BaseModel.load(llama); PeftModel loaded = PeftModel.load(base, dir)) {
            assertEquals(config.peftType(), JSON.readTree(loaded.adapterConfig("default")).get("peft_type").asText());
        }
    }

    /** PaFi's Fisher mask is chosen on calibration examples given with the config, and refused without them. */
    @Test
    void pafiFisherMaskReadsCalibrationExamples() throws IOException {
        Path llama = TestFiles.golden().resolve("models/llama");
        PafiConfig fisher = PafiConfig.builder().targetModules("q_proj", "v_proj").k(300).maskType("fisher").build();
        try (BaseModel base = BaseModel.load(llama); TrainingData calibration = new TrainingData()) {
            calibration.addSequence(new long[] {1, 5, 9, 3}, new long[] {1, 5, 9, 3});
            calibration.addSequence(new long[] {2, 7, 4}, new long[] {2, 7, 4});
            PeftException refused = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", fisher, 0));
            assertTrue(refused.getMessage().contains("calibration"), refused.getMessage());
            try (PeftModel model = PeftModel.create(base, "default", fisher, 0, calibration)) {
                assertEquals(300, model.trainableParameterCount());
                assertEquals("fisher", JSON.readTree(model.adapterConfig("default")).get("mask_type").asText());
            }
        }
    }

    @Test
    void buildersCheckTheirInputs() {
        PeftException noTargets = assertThrows(PeftException.class, () -> LoHaConfig.builder().r(4).build());
        assertTrue(noTargets.getMessage().contains("target_modules"), noTargets.getMessage());
        PeftException rank = assertThrows(PeftException.class, () -> VeraConfig.builder().r(0));
        assertTrue(rank.getMessage().contains("r must be positive"), rank.getMessage());
        PeftException dropout = assertThrows(PeftException.class, () -> LoKrConfig.builder().rankDropout(1.5));
        assertTrue(dropout.getMessage().contains("rank_dropout"), dropout.getMessage());
        PeftException blocks = assertThrows(PeftException.class,
                () -> LoraConfig.builder().useBdlora(List.of("q_proj"), List.of("o_proj"), 0, true));
        assertTrue(blocks.getMessage().contains("use_bdlora.nblocks"), blocks.getMessage());
        PeftException range = assertThrows(PeftException.class,
                () -> LoraConfig.builder().layerReplication(new int[] {0, 1, 2}));
        assertTrue(range.getMessage().contains("layer_replication"), range.getMessage());
    }

    @Test
    void theCoreRejectsAValueItCannotApplyNamingTheField() {
        Path llama = TestFiles.golden().resolve("models/llama");
        C3aConfig config = C3aConfig.builder().blockSize(48).targetModules("q_proj").build();  // 48 does not divide 64
        try (BaseModel base = BaseModel.load(llama)) {
            PeftException e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", config));
            assertTrue(e.getMessage().contains("block_size"), e.getMessage());
        }
    }
}
