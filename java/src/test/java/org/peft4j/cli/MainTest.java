package org.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MainTest {
    @TempDir
    Path dir;

    private static CliRun run(String... args) {
        return CliRun.of(args);
    }


    private static Path golden() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).resolve("python-parity/golden");
    }

    @Test
    void inspectListsAnAdapterWithItsConfig() {
        CliRun r = run("inspect", golden().resolve("cases/lora_llama_all/adapter").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("peft_type: \"LORA\""), r.out());
        assertTrue(r.out().contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight  F32   [4, 64]"), r.out());
    }

    @Test
    void inspectListsAModelDirectory() {
        CliRun r = run("inspect", golden().resolve("models/gpt2").toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("model_type: \"gpt2\""));
        assertTrue(r.out().contains("transformer.h.0.attn.c_attn.weight"));
    }

    @Test
    void aRepeatedOptionTakesItsLastValue() {
        CliRun r = run("generate", "--model", dir.resolve("first").toString(), "--model", dir.resolve("second").toString(),
                "hello");
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("model directory '" + dir.resolve("second") + "' does not exist"), r.err());
    }

    @Test
    void corruptInputGivesOneErrorLineAndNonZeroExit() throws Exception {
        Path bad = dir.resolve("bad.safetensors");
        Files.write(bad, new byte[] {1, 2, 3});
        CliRun r = run("inspect", bad.toString());
        assertEquals(1, r.code());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains(bad.toString()) && r.err().contains("shorter than the 8-byte header length"), r.err());
        assertFalse(r.err().contains("Exception"), r.err());
        CliRun missing = run("inspect", dir.resolve("absent").toString());
        assertEquals(1, missing.code());
        assertEquals(1, missing.err().strip().lines().count(), missing.err());
    }
}
