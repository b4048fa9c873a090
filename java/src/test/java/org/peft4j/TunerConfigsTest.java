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
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.peft4j.config.AdaLoraConfig;
import org.peft4j.config.AdapterBiasConfig;
import org.peft4j.config.AdapterConfig;
import org.peft4j.config.AdaptionPromptConfig;
import org.peft4j.config.BitFitConfig;
import org.peft4j.config.BoftConfig;
import org.peft4j.config.BottleneckConfig;
import org.peft4j.config.C3aConfig;
import org.peft4j.config.DeftConfig;
import org.peft4j.config.FourierFtConfig;
import org.peft4j.config.GloraConfig;
import org.peft4j.config.HraConfig;
import org.peft4j.config.IA3Config;
import org.peft4j.config.LayerFreezingConfig;
import org.peft4j.config.LnTuningConfig;
import org.peft4j.config.LoHaConfig;
import org.peft4j.config.LoKrConfig;
import org.peft4j.config.LoraConfig;
import org.peft4j.config.MamConfig;
import org.peft4j.config.MissConfig;
import org.peft4j.config.MultiHeadParallelAdapterConfig;
import org.peft4j.config.OftConfig;
import org.peft4j.config.PrefixTuningConfig;
import org.peft4j.config.PromptEncoderConfig;
import org.peft4j.config.PromptTuningConfig;
import org.peft4j.config.PveraConfig;
import org.peft4j.config.RandLoraConfig;
import org.peft4j.config.RoadConfig;
import org.peft4j.config.ShiraConfig;
import org.peft4j.config.TrainableTokensConfig;
import org.peft4j.config.TunerConfig;
import org.peft4j.config.UniPeltConfig;
import org.peft4j.config.VbLoraConfig;
import org.peft4j.config.VeraConfig;

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
     * on a golden base model ("llama" or "gpt2") saves and loads back to the same logits, with the method's peft_type.
     * A method is added here or above; ConfigCoverageTest fails for a registered method without a row.
     */
    static Stream<Arguments> generatedConfigs() {
        return Stream.of(
                Arguments.of("lora", "llama", LoraConfig.builder().r(4).targetModules("q_proj", "v_proj").build()),
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
                Arguments.of("mh_parallel_adapter", "llama",
                        MultiHeadParallelAdapterConfig.builder().bottleneckSize(4).build()),
                Arguments.of("pvera", "llama", PveraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .initWeights(false).generatorSeed(3).build()),
                Arguments.of("deft", "gpt2", DeftConfig.builder().r(4).alpha(8).targetModules("c_attn", "c_fc")
                        .fanInFanOut(true).initWeights(false).build()),
                Arguments.of("glora", "llama", GloraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                        .initWeights(false).build()));
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

    @Test
    void buildersCheckTheirInputs() {
        PeftException noTargets = assertThrows(PeftException.class, () -> LoHaConfig.builder().r(4).build());
        assertTrue(noTargets.getMessage().contains("target_modules"), noTargets.getMessage());
        PeftException rank = assertThrows(PeftException.class, () -> VeraConfig.builder().r(0));
        assertTrue(rank.getMessage().contains("r must be positive"), rank.getMessage());
        PeftException dropout = assertThrows(PeftException.class, () -> LoKrConfig.builder().rankDropout(1.5));
        assertTrue(dropout.getMessage().contains("rank_dropout"), dropout.getMessage());
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
