package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.config.AdapterConfig;
import org.peft4j.config.LoraConfig;

/** The Java PeftModel API against PEFT's golden files. */
class PeftModelTest {
    @TempDir
    Path dir;

    private static final Path CASE = TestFiles.golden().resolve("cases/lora_llama_all");
    private static final Path LLAMA = TestFiles.golden().resolve("models/llama");

    static float maxAbsDiff(float[] a, float[] b) {
        assertEquals(a.length, b.length);
        float worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
        return worst;
    }

    @Test
    void loadsPeftsAdapterAndReproducesItsLogits() {
        try (NamedTensors io = SafeTensors.read(CASE.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor want = io.get("logits");
                Tensor baseWant = io.get("base_logits");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.load(base, CASE.resolve("adapter"))) {
            assertEquals(List.of("default"), model.adapterNames());
            try (Tensor logits = model.forward(ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), want.toFloatArray()) < 1e-4);
            }
            model.setAdaptersDisabled(true);
            try (Tensor logits = model.forward(ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), baseWant.toFloatArray()) < 1e-4);
            }
        }
    }

    @Test
    void savedAdapterHasPeftsKeys() throws Exception {
        Path out = dir.resolve("saved");
        try (BaseModel base = BaseModel.load(LLAMA); PeftModel model = PeftModel.load(base, CASE.resolve("adapter"))) {
            model.save(out);
        }
        try (NamedTensors ours = SafeTensors.read(out.resolve("adapter_model.safetensors"));
                NamedTensors theirs = SafeTensors.read(CASE.resolve("adapter/adapter_model.safetensors"))) {
            assertEquals(theirs.names(), ours.names());
            for (String name : theirs.names()) {
                try (Tensor a = ours.get(name); Tensor b = theirs.get(name)) {
                    assertArrayEquals(b.toFloatArray(), a.toFloatArray(), 0f, name);
                }
            }
        }
        assertTrue(Files.readString(out.resolve("adapter_config.json")).contains("\"peft_type\": \"LORA\""));
    }

    @Test
    void newLoraAdapterStartsAsTheBaseAndCountsItsParameters() {
        LoraConfig config = LoraConfig.builder().r(4).loraAlpha(8).targetModules("q_proj", "v_proj").build();
        try (NamedTensors io = SafeTensors.read(CASE.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor baseWant = io.get("base_logits");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.create(base, "default", config)) {
            try (Tensor logits = model.forward(ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), baseWant.toFloatArray()) < 1e-5);
            }
            // 2 layers x (q: 4x64 + 64x4, v: 4x64 + 32x4)
            assertEquals(2 * ((4 * 64 + 64 * 4) + (4 * 64 + 32 * 4)), model.trainableParameterCount());
            model.merge();
            model.unmerge();
            try (BaseModel merged = model.mergeAndUnload(); Tensor logits = merged.forward(ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), baseWant.toFloatArray()) < 1e-5);
            }
        }
    }

    @Test
    void badAdaptersAreRefusedClearly() throws Exception {
        try (BaseModel base = BaseModel.load(LLAMA)) {
            PeftException missingTarget = assertThrows(PeftException.class, () -> PeftModel.create(base, "x",
                    LoraConfig.builder().targetModules("not_a_module").build()));
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, missingTarget.kind());
            assertTrue(missingTarget.getMessage().contains("not_a_module"), missingTarget.getMessage());
            PeftException unknown = assertThrows(PeftException.class, () -> PeftModel.create(base, "x",
                    AdapterConfig.fromJson("{\"peft_type\": \"SOMETHING\", \"target_modules\": [\"q_proj\"]}")));
            assertEquals(PeftException.Kind.UNSUPPORTED, unknown.kind());
            PeftException absent = assertThrows(PeftException.class,
                    () -> PeftModel.load(base, dir.resolve("no-such-adapter")));
            assertEquals(PeftException.Kind.NOT_FOUND, absent.kind());
            // the base model still works after every refusal
            try (Tensor ids = Tensor.of(new long[] {1, 2, 3}, 1, 3); Tensor logits = base.forward(ids, null)) {
                assertArrayEquals(new long[] {1, 3, 256}, logits.shape());
            }
        }
    }

    /** PEFT's mixed batch of the golden two-adapter case: row 0 through "a", row 1 through "b". */
    @Test
    void forwardMixedRoutesRowsAsPeftDoes() {
        Path twoAdapters = TestFiles.golden().resolve("cases/lora_two_adapters_llama");
        try (NamedTensors io = SafeTensors.read(twoAdapters.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor want = io.get("mixed_logits");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.load(base, twoAdapters.resolve("adapters/a"), "a", Trainability.FROZEN)) {
            model.loadAdapter(twoAdapters.resolve("adapters/b"), "b", Trainability.FROZEN);
            try (Tensor logits = model.forwardMixed(List.of("a", "b"), ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), want.toFloatArray()) < 1e-4);
            }
            PeftException rows = assertThrows(PeftException.class, () -> model.forwardMixed(List.of("a"), ids, mask));
            assertTrue(rows.getMessage().contains("one adapter name per row"), rows.getMessage());
            PeftException unknown = assertThrows(PeftException.class,
                    () -> model.forwardMixed(List.of("a", "nope"), ids, mask));
            assertTrue(unknown.getMessage().contains("nope"), unknown.getMessage());
        }
    }

    /** Two active adapters act together: their merged weights give the unmerged logits, which neither gives alone. */
    @Test
    void setActiveAdaptersAppliesEachInTurn() {
        Path twoAdapters = TestFiles.golden().resolve("cases/lora_two_adapters_llama");
        try (NamedTensors io = SafeTensors.read(twoAdapters.resolve("io.safetensors"));
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor onlyA = io.get("logits_a");
                BaseModel base = BaseModel.load(LLAMA);
                PeftModel model = PeftModel.load(base, twoAdapters.resolve("adapters/a"), "a", Trainability.FROZEN)) {
            model.loadAdapter(twoAdapters.resolve("adapters/b"), "b", Trainability.FROZEN);
            model.setActiveAdapters(List.of("a", "b"));
            float[] both;
            try (Tensor logits = model.forward(ids, mask)) {
                both = logits.toFloatArray();
            }
            assertTrue(maxAbsDiff(both, onlyA.toFloatArray()) > 1e-3);
            model.merge();
            try (Tensor logits = model.forward(ids, mask)) {
                assertTrue(maxAbsDiff(logits.toFloatArray(), both) < 1e-4);
            }
            assertThrows(PeftException.class, () -> model.setActiveAdapters(List.of()));
        }
    }
}
