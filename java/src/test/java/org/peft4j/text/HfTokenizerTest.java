package org.peft4j.text;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.PeftException;

class HfTokenizerTest {
    @TempDir
    Path dir;

    private static Path demoModel() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().resolve("demo/model");
    }

    @Test
    void vocabSizeIsWhatPythonTokenizersReports() throws Exception {
        // demo/pretrain.py wrote tokenizers' get_vocab_size() into config.json as vocab_size.
        long expected = new ObjectMapper().readTree(demoModel().resolve("config.json").toFile()).get("vocab_size").asLong();
        try (HfTokenizer tokenizer = HfTokenizer.load(demoModel())) {
            assertEquals(expected, tokenizer.vocabSize());
            assertEquals(0, tokenizer.padTokenId().getAsLong());
        }
    }

    @Test
    void missingOrBrokenTokenizerFilesAreClearErrors() throws Exception {
        PeftException missing = assertThrows(PeftException.class, () -> HfTokenizer.load(dir));
        assertEquals(PeftException.Kind.NOT_FOUND, missing.kind());
        assertEquals("no tokenizer.json in '" + dir + "'", missing.getMessage());

        Files.copy(demoModel().resolve("config.json"), dir.resolve("config.json"));
        Files.writeString(dir.resolve("tokenizer.json"), "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [");
        PeftException broken = assertThrows(PeftException.class, () -> HfTokenizer.load(dir));
        assertEquals(PeftException.Kind.FORMAT, broken.kind());
        assertTrue(broken.getMessage().startsWith("cannot read '" + dir.resolve("tokenizer.json") + "'"), broken.getMessage());

        Files.writeString(dir.resolve("tokenizer.json"), "{\"model\": {\"type\": \"Unknown\", \"vocab\": {\"a\": 0}}}");
        PeftException unloadable = assertThrows(PeftException.class, () -> HfTokenizer.load(dir));
        assertEquals(PeftException.Kind.FORMAT, unloadable.kind());
        assertTrue(unloadable.getMessage().startsWith("cannot load tokenizer '" + dir.resolve("tokenizer.json") + "'"),
                unloadable.getMessage());
    }
}
