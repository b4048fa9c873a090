package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.LoraConfig;

/** The Java Trainer over the native trainer, on the golden tiny llama with LoRA. */
class TrainerTest {
    @TempDir
    Path dir;

    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    /** Random token sequences of the tiny llama's vocabulary (256), labels = ids. */
    static TrainingData sequences(int count, int length, long seed) {
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

    @Test
    void oneSeedGivesBitwiseTheSameAdapterAndTraining() throws Exception {
        LoraConfig config = LoraConfig.builder().r(4).loraAlpha(8).loraDropout(0.1).targetModules("q_proj", "v_proj").build();
        List<byte[]> saved = new ArrayList<>();
        for (long seed : new long[] {11, 11, 12}) {
            Path out = dir.resolve("seed-" + saved.size());
            try (BaseModel base = BaseModel.load(LLAMA);
                    PeftModel model = PeftModel.create(base, "default", config, seed);
                    TrainingData train = sequences(4, 8, 5)) {
                model.save(out.resolve("initial"));
                try (Trainer trainer = Trainer.builder().model(model).trainData(train).batchSize(2).maxSteps(3)
                        .learningRate(0.01).seed(seed).outputDir(out).build()) {
                    trainer.train(m -> { });
                    trainer.saveAdapter(out);
                }
            }
            byte[] initial = Files.readAllBytes(out.resolve("initial/adapter_model.safetensors"));
            byte[] trained = Files.readAllBytes(out.resolve("adapter_model.safetensors"));
            assertFalse(Arrays.equals(initial, trained), "training changed nothing");
            saved.add(initial);
            saved.add(trained);
        }
        assertArrayEquals(saved.get(0), saved.get(2), "seed 11 twice: different initial adapters");
        assertArrayEquals(saved.get(1), saved.get(3), "seed 11 twice: different trained adapters");
        assertFalse(Arrays.equals(saved.get(0), saved.get(4)), "seeds 11 and 12 gave the same adapter");
    }

    @Test
    void badExamplesAreRefusedBeforeAnyWorkAndNothingIsWritten() {
        Path out = dir.resolve("never");
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = lora(base)) {
            for (long[][] example : new long[][][] {{{1, 256, 3}, {1, 2, 3}}, {{-1, 2}, {1, 2}}, {{1, 2}, {1, 512}},
                    {{7}, {7}}}) {
                try (TrainingData train = new TrainingData().addSequence(example[0], example[1])) {
                    PeftException e = assertThrows(PeftException.class,
                            () -> Trainer.builder().model(model).trainData(train).outputDir(out).build());
                    assertEquals(PeftException.Kind.INVALID_ARGUMENT, e.kind());
                    assertTrue(e.getMessage().startsWith("training example 0"), e.getMessage());
                }
            }
            try (TrainingData empty = new TrainingData()) {
                PeftException e = assertThrows(PeftException.class, () -> empty.addSequence(new long[0], new long[0]));
                assertTrue(e.getMessage().contains("at least one token"), e.getMessage());
            }
        }
        assertFalse(Files.exists(out), "a refused trainer created its output directory");
    }

    @Test
    void examplesLongerThanTheModelsPositionsAreTruncatedWithAWarning() {
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = lora(base);
                TrainingData train = sequences(2, 150, 6);
                Trainer trainer = Trainer.builder().model(model).trainData(train).outputDir(dir.resolve("long")).build()) {
            assertEquals(List.of("2 of 2 training examples were longer than 128 tokens and were truncated to 128 (the "
                    + "model's 128 positions, fewer than max_seq_length 512)"), trainer.warnings());
        }
    }

    @Test
    void checkOutputDirNamesWhyADirectoryCannotBeWritten() throws Exception {
        Path file = Files.writeString(dir.resolve("plain"), "x");
        PeftException below = assertThrows(PeftException.class, () -> Trainer.checkOutputDir(file.resolve("out")));
        assertEquals(PeftException.Kind.IO, below.kind());
        assertTrue(below.getMessage().contains("is below the file '" + file + "'"), below.getMessage());
        Trainer.checkOutputDir(dir.resolve("fresh/out"));
        assertFalse(Files.exists(dir.resolve("fresh")), "the check created something");
        Assumptions.assumeTrue(Files.isDirectory(Path.of("/sys/kernel")));
        // sysfs refuses new files to everyone, root included.
        PeftException readOnly = assertThrows(PeftException.class, () -> Trainer.checkOutputDir(Path.of("/sys/kernel")));
        assertTrue(readOnly.getMessage().contains("output directory '/sys/kernel' is not writable"), readOnly.getMessage());
    }
}
