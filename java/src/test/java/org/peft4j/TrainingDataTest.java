package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.data.DataRecord;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.text.HfTokenizer;

/** TrainingData.fromJsonl: the library's way from JSONL files to training data, as the CLI reads them. */
class TrainingDataTest {
    private static final Path DEMO = TestFiles.sourceDir().resolve("demo");

    @TempDir
    Path dir;

    @Test
    void readsTheDemoDataAsTheCliEncodesIt() {
        Path train = DEMO.resolve("data/train.jsonl");
        List<DataRecord> records = JsonlReader.read(train);
        try (HfTokenizer tokenizer = HfTokenizer.load(DEMO.resolve("model"));
                TrainingData data = TrainingData.fromJsonl(List.of(train), tokenizer);
                TrainingData encoded = TrainingData.of(new ExampleEncoder(tokenizer, null).encode(records))) {
            assertEquals(records.size(), data.size());
            assertEquals(encoded.size(), data.size());
        }
    }

    @Test
    void aBadLineIsNamedByFileAndLine() throws Exception {
        Path bad = dir.resolve("bad.jsonl");
        Files.writeString(bad, "{\"text\": \"fine\"}\n{\"text\": 3}\n");
        try (HfTokenizer tokenizer = HfTokenizer.load(DEMO.resolve("model"))) {
            PeftException e = assertThrows(PeftException.class, () -> TrainingData.fromJsonl(List.of(bad), tokenizer));
            assertTrue(e.getMessage().contains("bad.jsonl:2"), e.getMessage());
        }
    }
}
