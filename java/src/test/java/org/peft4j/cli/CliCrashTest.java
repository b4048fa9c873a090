package org.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * train killed with SIGKILL (in a child JVM, by the core's PEFT4J_TEST_KILL_AT) while it saves a checkpoint, rotates
 * the old ones, or writes the final adapter: every checkpoint that looks complete then evaluates, --resume ends the
 * run as an uninterrupted one ends it, metrics.json covers every step, and no temporary file of ours remains.
 */
class CliCrashTest {
    private static final int STEPS = 6;

    @TempDir
    Path dir;

    private static Path demo() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().resolve("demo");
    }

    private String data() throws Exception {
        return lines("train.jsonl", 16);
    }

    private String lines(String name, int count) throws Exception {
        Path file = dir.resolve(name);
        if (!Files.exists(file)) {
            Files.write(file, Files.readAllLines(demo().resolve("data/train.jsonl")).subList(0, count));
        }
        return file.toString();
    }

    private String[] train(Path out, String... more) throws Exception {
        List<String> args = new ArrayList<>(List.of("train", "--model", demo().resolve("model").toString(), "--data",
                data(), "--out", out.toString(), "--max-steps", String.valueOf(STEPS), "--save-steps", "1",
                "--save-total-limit", "2", "--per-device-train-batch-size", "4", "--learning-rate", "1e-2"));
        args.addAll(List.of(more));
        return args.toArray(String[]::new);
    }

    /** The CLI in a child JVM that the core kills at {@code killAt}; returns the child's exit status and output. */
    private String killedRun(String killAt, String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElseThrow(), "-cp",
                System.getProperty("java.class.path"), Main.class.getName()));
        command.addAll(List.of(args));
        Path log = dir.resolve("child.log");
        ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().put("PEFT4J_TEST_KILL_AT", killAt);
        Process child = builder.start();
        if (!child.waitFor(300, TimeUnit.SECONDS)) {
            child.destroyForcibly();
        }
        return child.exitValue() + " " + Files.readString(log);
    }

    private static List<Path> ours(Path out) throws Exception {
        try (Stream<Path> all = Files.walk(out)) {
            return all.filter(p -> p.getFileName().toString().matches(".*\\.tmp\\.\\d+\\.\\d+|\\.checkpoint-.*")).toList();
        }
    }

    private static JsonNode metrics(Path out) throws Exception {
        return new ObjectMapper().readTree(out.resolve("metrics.json").toFile());
    }

    @Test
    void killedWhileSavingThenResumedEndsAsAnUninterruptedRun() throws Exception {
        Path straight = dir.resolve("straight");
        CliRun whole = CliRun.of(train(straight));
        assertEquals(0, whole.code(), whole.err());
        JsonNode expected = metrics(straight);

        for (String phase : List.of("checkpoint-rotate:3", "checkpoint-partial:5", "atomic-rename:OUT/adapter_model.safetensors")) {
            Path out = dir.resolve("killed-" + phase.substring(0, phase.indexOf(':')));
            String killAt = phase.replace("OUT", out.toString());
            String child = killedRun(killAt, train(out));
            // 128 + SIGKILL (9): the JVM ended by the kill, not by itself.
            assertTrue(child.startsWith("137 "), killAt + ": " + child);
            assertFalse(ours(out).isEmpty(), killAt + ": the kill left nothing half-done, so it missed its phase");

            try (Stream<Path> entries = Files.list(out)) {
                for (Path checkpoint : entries.filter(p -> p.getFileName().toString().startsWith("checkpoint-")).toList()) {
                    CliRun eval = CliRun.of("eval", "--model", demo().resolve("model").toString(), "--adapter",
                            checkpoint.toString(), "--data", lines("eval.jsonl", 2), "--max-new-tokens", "1");
                    assertEquals(0, eval.code(), killAt + ": " + checkpoint + ": " + eval.err());
                }
            }

            CliRun resumed = CliRun.of(train(out, "--resume"));
            assertEquals(0, resumed.code(), killAt + ": " + resumed.err());
            assertEquals(List.of(), ours(out), killAt);
            JsonNode metrics = metrics(out);
            assertEquals(STEPS, metrics.get("train").size(), killAt + ": " + metrics.get("train"));
            for (int i = 0; i < STEPS; i++) {
                assertEquals(i + 1, metrics.get("train").get(i).get("step").asLong());
                assertEquals(expected.get("train").get(i).get("loss").asDouble(),
                        metrics.get("train").get(i).get("loss").asDouble(), 1e-5, killAt + ": step " + (i + 1));
            }
            assertEquals(expected.get("summary").get("train_tokens").asLong(),
                    metrics.get("summary").get("train_tokens").asLong(), killAt);
            assertTrue(Files.isRegularFile(out.resolve("adapter_model.safetensors")), killAt);
        }
    }
}
