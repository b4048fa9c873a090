package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code close()} racing calls in flight (forward, generate, a training step, tokenizing) may never crash the JVM nor
 * yield any error but "closed": 100 races per kind of call, in child JVMs ({@link CloseRace}), since a crash would take
 * the test JVM down with it. Each child must exit 0 without an hs_err file and print nothing on standard error (so
 * loading a tokenizer prints none of DJL's INFO lines either).
 */
class CloseRaceTest {
    private static final int CHILDREN = 2;
    private static final int RACES_PER_CHILD = 50;

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"forward", "generate", "trainer", "tokenizer"})
    void closingUnderCallsInFlightOnlyEverSaysClosed(String scenario) throws Exception {
        for (int child = 0; child < CHILDREN; child++) {
            Path work = Files.createDirectories(dir.resolve(scenario + "-" + child));
            List<String> command = new ArrayList<>(List.of(
                    Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "-XX:ErrorFile=" + work.resolve("hs_err_pid%p.log"),
                    "-cp", System.getProperty("java.class.path"),
                    CloseRace.class.getName(), scenario, Integer.toString(RACES_PER_CHILD),
                    (scenario.equals("tokenizer") ? TestFiles.sourceDir().resolve("demo/model")
                            : TestFiles.golden().resolve("models/llama")).toString(), work.toString(),
                    Integer.toString(child)));
            ProcessBuilder builder = new ProcessBuilder(command).directory(work.toFile())
                    .redirectOutput(work.resolve("stdout").toFile()).redirectError(work.resolve("stderr").toFile());
            // As the launcher runs the CLI: idle OpenMP threads sleep rather than spin, which beside other work on
            // the same cores (other tests, builds) makes the children several times slower.
            builder.environment().putIfAbsent("OMP_WAIT_POLICY", "PASSIVE");
            Process process = builder.start();
            assertTrue(process.waitFor(5, TimeUnit.MINUTES), scenario + " child " + child + " did not finish");
            String out = Files.readString(work.resolve("stdout"), StandardCharsets.UTF_8);
            String err = Files.readString(work.resolve("stderr"), StandardCharsets.UTF_8);
            String where = scenario + " child " + child + ": exit " + process.exitValue() + "\n" + out + err;
            assertEquals(0, process.exitValue(), where);
            assertEquals(List.of(), crashReports(work), where);
            assertEquals("", err, where);
            assertEquals("races " + RACES_PER_CHILD, out.strip(), where);
        }
    }

    private static List<Path> crashReports(Path work) throws IOException {
        try (Stream<Path> files = Files.list(work)) {
            return files.filter(f -> f.getFileName().toString().startsWith("hs_err")).toList();
        }
    }
}
