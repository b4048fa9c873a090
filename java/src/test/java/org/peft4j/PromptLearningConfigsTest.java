package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.peft4j.config.AdapterConfig;
import org.peft4j.config.AdaptionPromptConfig;
import org.peft4j.config.PrefixTuningConfig;
import org.peft4j.config.PromptEncoderConfig;
import org.peft4j.config.PromptTuningConfig;

/** The prompt-learning and adaption-prompt configs through PeftModel against PEFT's golden cases. */
class PromptLearningConfigsTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    private static long peftTrainableParams(String caseName) throws Exception {
        Path caseJson = TestFiles.golden().resolve("cases/" + caseName + "/case.json");
        return new ObjectMapper().readTree(caseJson.toFile()).get("trainable_params").asLong();
    }

    private static float maxAbsDiff(Tensor a, Tensor b) {
        float[] x = a.toFloatArray();
        float[] y = b.toFloatArray();
        assertEquals(y.length, x.length);
        float worst = 0;
        for (int i = 0; i < x.length; i++) {
            worst = Math.max(worst, Math.abs(x[i] - y[i]));
        }
        return worst;
    }

    private static void assertTrainable(String caseName, AdapterConfig config) throws Exception {
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = PeftModel.create(base, "default", config)) {
            assertEquals(peftTrainableParams(caseName), model.trainableParameterCount(), caseName);
        }
    }

    @Test
    void trainableCountsEqualPefts() throws Exception {
        assertTrainable("prompt_tuning_llama", PromptTuningConfig.builder().numVirtualTokens(5).build());
        assertTrainable("prefix_llama", PrefixTuningConfig.builder().numVirtualTokens(5).build());
        assertTrainable("prefix_proj_llama",
                PrefixTuningConfig.builder().numVirtualTokens(5).prefixProjection(true).encoderHiddenSize(32).build());
        assertTrainable("ptuning_mlp_llama", PromptEncoderConfig.builder().numVirtualTokens(5).encoderHiddenSize(32).build());
        assertTrainable("ptuning_lstm_llama", PromptEncoderConfig.builder().numVirtualTokens(5).encoderHiddenSize(32)
                .encoderReparameterizationType("LSTM").build());
        assertTrainable("adaption_prompt_llama", AdaptionPromptConfig.builder().adapterLen(4).adapterLayers(1).build());
    }

    @Test
    void promptTunedLogitsEqualPeftsAfterLoadingItsAdapter() {
        Path caseDir = TestFiles.golden().resolve("cases/prompt_tuning_llama");
        try (NamedTensors io = SafeTensors.read(caseDir.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor want = io.get("logits");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.load(base, caseDir.resolve("adapter"));
                Tensor logits = model.forward(ids, mask)) {
            assertTrue(maxAbsDiff(logits, want) < 1e-4);
        }
    }

    @Test
    void newAdaptionPromptLeavesTheBaseLogits() {
        Path caseDir = TestFiles.golden().resolve("cases/adaption_prompt_llama");
        AdaptionPromptConfig config = AdaptionPromptConfig.builder().adapterLen(4).adapterLayers(2).build();
        try (NamedTensors io = SafeTensors.read(caseDir.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor want = io.get("base_logits");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default", config);
                Tensor logits = model.forward(ids, mask)) {
            assertEquals(0f, maxAbsDiff(logits, want), 1e-5f);
        }
    }

    @Test
    void textInitRecordsTheTokenIds() throws Exception {
        PromptTuningConfig config = PromptTuningConfig.builder().numVirtualTokens(5)
                .textInit("three words here", new long[] {7, 11, 13}, "my-tokenizer").build();
        var json = new ObjectMapper().readTree(config.toJson());
        assertEquals("TEXT", json.get("prompt_tuning_init").asText());
        assertEquals("[7,11,13]", json.get("prompt_tuning_init_token_ids").toString());
        assertTrainable("prompt_tuning_llama", config);
    }

    @Test
    void configsThatCannotApplyAreRejected() {
        assertThrows(PeftException.class, () -> PromptTuningConfig.builder().build());
        assertThrows(PeftException.class, () -> PromptTuningConfig.builder().numVirtualTokens(0));
        assertThrows(PeftException.class, () -> AdaptionPromptConfig.builder().adapterLen(4).build());
        PrefixTuningConfig unusedHidden = PrefixTuningConfig.builder().numVirtualTokens(5).encoderHiddenSize(48).build();
        try (BaseModel base = BaseModel.load(LLAMA)) {
            PeftException e = assertThrows(PeftException.class, () -> PeftModel.create(base, "default", unusedHidden));
            assertTrue(e.getMessage().contains("encoder_hidden_size"), e.getMessage());
        }
    }
}
