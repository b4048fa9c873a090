package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.text.HfTokenizer;
import org.peft4j.config.LoraConfig;

/**
 * What closing means: every class refuses calls after {@link AutoCloseable#close()} with a PeftException of kind
 * CLOSED naming it, closing twice does nothing, and objects that share native state with a closed one keep working
 * (a PeftModel over a closed base, a Trainer over a closed PeftModel). The races of closing against calls in flight
 * are {@link CloseRaceTest}'s.
 */
class LifetimeTest {
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    @TempDir
    Path dir;

    private static PeftModel lora(BaseModel base) {
        return PeftModel.create(base, "default", LoraConfig.builder().r(4).loraAlpha(8).initLoraWeights(false)
                .targetModules("q_proj", "v_proj").build());
    }

    @Test
    void everyClassSaysClosedAfterClose() {
        BaseModel base = BaseModel.load(LLAMA);
        PeftModel peft = lora(base);
        Tensor ids = Tensor.of(new long[] {1, 2, 3, 4}, 1, 4);
        TrainingData data = new TrainingData().addSequence(new long[] {1, 2, 3, 4}, new long[] {1, 2, 3, 4});
        Trainer trainer = Trainer.builder().model(peft).trainData(data).maxSteps(2).outputDir(dir).build();
        NamedTensors named = new NamedTensors();
        HfTokenizer tokenizer = HfTokenizer.load(TestFiles.sourceDir().resolve("demo/model"));
        Tensor live = Tensor.of(new long[] {5, 6}, 1, 2);

        Map<String, Executable> calls = new LinkedHashMap<>();
        calls.put("tensor is closed", ids::shape);
        calls.put("PEFT model is closed", () -> peft.forward(live, null));
        calls.put("model is closed", () -> base.forward(live, null));
        calls.put("trainer is closed", trainer::step);
        calls.put("training data is closed", data::size);
        calls.put("tensor collection is closed", named::names);
        calls.put("tokenizer is closed", () -> tokenizer.encode("a", false));
        for (AutoCloseable resource : new AutoCloseable[] {ids, trainer, peft, base, data, named, tokenizer}) {
            try {
                resource.close();
                resource.close();  // a second close does nothing
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        }
        calls.forEach((message, call) -> {
            PeftException e = assertThrows(PeftException.class, call, message);
            assertEquals(PeftException.Kind.CLOSED, e.kind(), e.getMessage());
            assertEquals(message, e.getMessage());
        });
        // A closed input is named as well, whoever receives it.
        try (BaseModel other = BaseModel.load(LLAMA)) {
            PeftException e = assertThrows(PeftException.class, () -> other.forward(ids, null));
            assertEquals("tensor is closed", e.getMessage());
        }
        live.close();
    }

    @Test
    void aPeftModelOutlivesItsClosedBaseAndATrainerItsClosedPeftModel() {
        BaseModel base = BaseModel.load(LLAMA);
        try (Tensor ids = Tensor.of(new long[] {1, 15, 27, 3}, 1, 4);
                PeftModel peft = lora(base);
                Tensor before = peft.forward(ids, null)) {
            base.close();
            try (Tensor after = peft.forward(ids, null)) {
                assertArrayEquals(before.toFloatArray(), after.toFloatArray(), 0f);
            }
            Trainer trainer;
            try (TrainingData data = new TrainingData().addSequence(new long[] {1, 2, 3, 4}, new long[] {1, 2, 3, 4})) {
                trainer = Trainer.builder().model(peft).trainData(data).maxSteps(2).outputDir(dir).build();
            }
            peft.close();
            try (trainer) {
                assertTrue(trainer.step());
                assertTrue(trainer.step());
                assertEquals(2, trainer.metrics().globalStep());
            }
        }
    }
}
