package org.peft4j.data;

import com.code_intelligence.jazzer.junit.FuzzTest;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.peft4j.PeftException;

/**
 * The JSONL reader's fuzz target (Jazzer). Arbitrary bytes in a data file give records, each naming its file and
 * line, or a {@link PeftException} whose message names the file; any other exception is a bug. Under JUnit it runs
 * in Jazzer's regression mode; native/fuzz/run.sh fuzzes {@link #fuzzerTestOneInput(byte[])} with Jazzer's driver.
 */
public class JsonlReaderFuzzTest {
    private static Path file;

    @FuzzTest
    void readsAnyBytesOrNamesTheFileInItsError(byte[] data) {
        fuzzerTestOneInput(data);
    }

    public static void fuzzerTestOneInput(byte[] data) {
        try {
            if (file == null) {
                file = Files.createTempFile("peft4j-fuzz", ".jsonl");
                file.toFile().deleteOnExit();
            }
            Files.write(file, data);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        List<DataRecord> records;
        try {
            records = JsonlReader.read(file);
        } catch (PeftException e) {
            if (!e.getMessage().contains(file.toString())) {
                throw new AssertionError("an error that does not name the file: " + e.getMessage(), e);
            }
            return;
        }
        if (records.isEmpty()) {
            throw new AssertionError("no records and no error");
        }
        for (DataRecord record : records) {
            if (!record.source().startsWith(file + ":")) {
                throw new AssertionError("a record whose source is not file:line: " + record.source());
            }
        }
    }
}
