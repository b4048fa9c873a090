package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.LoraConfig;

/**
 * LoRA's initialisations through the Java API (their numbers against PEFT are native/tests/test_lora_init.cpp and the
 * live rows): data-driven inits take TrainingData, and a base-changing init's trained adapter is saved converted for
 * the untouched base model.
 */
class LoraInitTest {
    @TempDir
    Path dir;

    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    private static LoraConfig.Builder lora() {
        return LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj", "down_proj");
    }

    @Test
    void whatEachInitAsksOfATrainingRun() {
        assertTrue(PeftModel.initialisesFromData(lora().evaInit().build()));
        assertTrue(PeftModel.initialisesFromData(lora().cordaInit().build()));
        assertTrue(PeftModel.initialisesFromData(lora().loraGaInit().build()));
        assertFalse(PeftModel.initialisesFromData(lora().pissaInit().build()));
        assertTrue(PeftModel.initialisationLeavesResidualBase(lora().pissaInit(4).build()));
        assertTrue(PeftModel.initialisationLeavesResidualBase(lora().oloraInit().build()));
        assertTrue(PeftModel.initialisationLeavesResidualBase(lora().loraGaInit().build()));
        assertFalse(PeftModel.initialisationLeavesResidualBase(lora().evaInit().build()));
        assertFalse(PeftModel.initialisationLeavesResidualBase(lora().micaInit().build()));
        assertFalse(PeftModel.initialisationLeavesResidualBase(lora().build()));
        assertThrows(PeftException.class, () -> lora().pissaInit(-1));
    }

    @Test
    void pissaAdapterTrainedAndSavedConvertedAppliesToTheUntouchedBase() throws Exception {
        Path initial = dir.resolve("initial");
        Path converted = dir.resolve("converted");
        float[] trained;
        float[] baseLogits;
        try (Tensor ids = Tensor.of(new long[] {5, 17, 42, 99, 3, 250, 7, 61}, 1, 8)) {
            try (BaseModel base = BaseModel.load(LLAMA); Tensor logits = base.forward(ids, null)) {
                baseLogits = logits.toFloatArray();
            }
            try (BaseModel base = BaseModel.load(LLAMA);
                    PeftModel model = PeftModel.create(base, "default", lora().pissaInit().build(), 1);
                    TrainingData train = TrainerTest.sequences(4, 12, 1)) {
                // PiSSA moves the principal part of W into the adapter: the model starts where the base is.
                try (Tensor logits = model.forward(ids, null)) {
                    assertTrue(PeftModelTest.maxAbsDiff(logits.toFloatArray(), baseLogits) < 1e-4);
                }
                model.save(initial);
                try (Trainer trainer = Trainer.builder().model(model).trainData(train).learningRate(0.01)
                        .batchSize(4).maxSteps(3).outputDir(dir.resolve("run")).build()) {
                    trainer.train(m -> { });
                }
                try (Tensor logits = model.forward(ids, null)) {
                    trained = logits.toFloatArray();
                }
                model.save(converted, "default", initial);
            }
            assertTrue(PeftModelTest.maxAbsDiff(trained, baseLogits) > 1e-3, "training changed the model");
            String config = Files.readString(converted.resolve("adapter_config.json"));
            assertTrue(config.contains("\"r\": 8") && config.contains("\"init_lora_weights\": true"), config);
            assertTrue(Files.readString(initial.resolve("adapter_config.json")).contains("\"init_lora_weights\": true"));
            try (BaseModel base = BaseModel.load(LLAMA);
                    PeftModel model = PeftModel.load(base, converted);
                    Tensor logits = model.forward(ids, null)) {
                assertTrue(PeftModelTest.maxAbsDiff(logits.toFloatArray(), trained) < 1e-4);
            }
        }
    }

    @Test
    void evaLearnsFromTrainingDataAndCordaWithoutDataIsRefused() throws Exception {
        try (Tensor ids = Tensor.of(new long[] {5, 17, 42, 99, 3, 250, 7, 61}, 1, 8);
                BaseModel base = BaseModel.load(LLAMA);
                TrainingData data = TrainerTest.sequences(6, 12, 2)) {
            float[] baseLogits;
            try (Tensor logits = base.forward(ids, null)) {
                baseLogits = logits.toFloatArray();
            }
            PeftException noData = assertThrows(PeftException.class,
                    () -> PeftModel.create(base, "default", lora().cordaInit().build(), 1));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, noData.kind());
            assertTrue(noData.getMessage().contains("initialises from data"), noData.getMessage());
            try (PeftModel model = PeftModel.create(base, "default", lora().evaInit().build(), 1, data, 2, 12, 0)) {
                // EVA's B starts at zero; its ranks are redistributed (4 per layer in all) and saved as PEFT saves them.
                try (Tensor logits = model.forward(ids, null)) {
                    assertTrue(PeftModelTest.maxAbsDiff(logits.toFloatArray(), baseLogits) < 1e-5);
                }
                model.save(dir.resolve("eva"));
                String config = Files.readString(dir.resolve("eva/adapter_config.json"));
                assertTrue(config.contains("\"eva_config\"") && config.contains("\"rank_pattern\""), config);
            }
        }
    }
}
