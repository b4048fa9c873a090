package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Java Trainer over the native trainer, on the golden tiny llama with LoRA. */
class TrainerTest {
    @TempDir
    Path dir;

    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    /** Random token sequences of the tiny llama's vocabulary (256), labels = ids. */
    private static TrainingData sequences(int count, int length, long seed) {
        Random random = new Random(seed);
        TrainingData data = new TrainingData();
        for (int i = 0; i < count; i++) {
            long[] ids = new long[length];
            for (int t = 0; t < length; t++) {
                ids[t] = random.nextInt(256);
            }
            data.addSequence(ids, ids);
        }
        return data;
    }

    private static PeftModel lora(BaseModel base) {
        return PeftModel.create(base, "default", LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj").build());
    }

    @Test
    void trainsLowersTheLossAndWritesCheckpoints() {
        Path out = dir.resolve("run");
        List<StepMetrics> seen = new ArrayList<>();
        try (BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = lora(base);
                TrainingData train = sequences(4, 12, 1);
                TrainingData eval = sequences(2, 12, 2);
                Trainer trainer = Trainer.builder().model(model).trainData(train).evalData(eval).learningRate(0.05)
                        .lrSchedulerType("constant").batchSize(4).maxSteps(30).saveSteps(10).outputDir(out).build()) {
            StepMetrics last = trainer.train(seen::add);
            assertEquals(30, seen.size());
            for (int i = 0; i < seen.size(); i++) {
                assertEquals(i + 1, seen.get(i).globalStep());
                assertEquals(30, seen.get(i).maxSteps());
            }
            // Random tokens start near ln(256) = 5.55 nats; 30 steps on 4 sequences take off a good part of a nat.
            assertTrue(last.loss() < seen.get(0).loss() - 0.3, seen.get(0).loss() + " -> " + last.loss());
            assertTrue(last.evaluated() && Double.isFinite(last.evalLoss()));
            assertTrue(Double.isNaN(last.evalAccuracy()));
            assertEquals(30 * 4 * 12, last.tokensSeen());
            assertEquals(out.resolve("checkpoint-30"), last.checkpoint().orElseThrow());
            assertFalse(trainer.step());
            trainer.saveAdapter(dir.resolve("final"));
        }
        // save_total_limit 2 keeps the two newest of checkpoints 10, 20 and 30.
        assertFalse(Files.exists(out.resolve("checkpoint-10")));
        for (String checkpoint : List.of("checkpoint-20", "checkpoint-30")) {
            for (String file : List.of("adapter_config.json", "adapter_model.safetensors", "optimizer.pt",
                    "trainer_state.json")) {
                assertTrue(Files.isRegularFile(out.resolve(checkpoint).resolve(file)), checkpoint + "/" + file);
            }
        }
        assertTrue(Files.isRegularFile(dir.resolve("final/adapter_model.safetensors")));
    }

    @Test
    void resumeContinuesFromTheNewestCheckpoint() {
        Path out = dir.resolve("resumed");
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = lora(base); TrainingData train = sequences(4, 8, 3)) {
            try (Trainer first = Trainer.builder().model(model).trainData(train).batchSize(2).maxSteps(6).saveSteps(2)
                    .outputDir(out).build()) {
                first.step();
                first.step();
                first.step();
            }
            try (Trainer second = Trainer.builder().model(model).trainData(train).batchSize(2).maxSteps(6).saveSteps(2)
                    .outputDir(out).build()) {
                second.resume();
                assertEquals(2, second.metrics().globalStep());
                StepMetrics last = second.train(m -> { });
                assertEquals(6, last.globalStep());
            }
        }
    }

    @Test
    void outputDirThatIsAFileIsAnIoError() throws Exception {
        Path file = Files.writeString(dir.resolve("not-a-dir"), "x");
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = lora(base); TrainingData train = sequences(2, 4, 4)) {
            PeftException e = assertThrows(PeftException.class,
                    () -> Trainer.builder().model(model).trainData(train).outputDir(file).build());
            assertEquals(PeftException.Kind.IO, e.kind());
            assertTrue(e.getMessage().contains(file.toString()), e.getMessage());
            PeftException unknown = assertThrows(PeftException.class,
                    () -> Trainer.builder().model(model).trainData(train).outputDir(dir).bf16(true).build());
            assertEquals(PeftException.Kind.UNSUPPORTED, unknown.kind());
            assertTrue(unknown.getMessage().contains("bf16"), unknown.getMessage());
        }
    }
}
