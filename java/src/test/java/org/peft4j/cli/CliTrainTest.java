package org.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.NamedTensors;
import org.peft4j.SafeTensors;
import org.peft4j.Tensor;

/** train, eval, generate and merge on the shipped demo model, and the errors they must report in one line. */
class CliTrainTest {
    @TempDir
    Path dir;

    private static CliRun run(String... args) {
        return CliRun.of(args);
    }


    private static Path demo() {
        return Paths.get(System.getProperty("peft4j.sourceDir", ".")).toAbsolutePath().resolve("demo");
    }

    private static String model() {
        return demo().resolve("model").toString();
    }

    private Path firstLines(int n) throws Exception {
        Path file = dir.resolve("train-" + n + ".jsonl");
        Files.write(file, Files.readAllLines(demo().resolve("data/train.jsonl")).subList(0, n));
        return file;
    }

    private static void assertOneErrorLine(CliRun r, String expected) {
        assertEquals(1, r.code(), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains(expected), r.err());
        assertFalse(r.err().contains("Exception"), r.err());
    }

    @Test
    void trainWritesAPeftAdapterAndAReportThatEvalGenerateAndMergeUse() throws Exception {
        Path out = dir.resolve("run");
        CliRun r = run("train", "--model", model(), "--data", firstLines(32).toString(), "--eval-data",
                firstLines(8).toString(), "--out", out.toString(), "--max-steps", "4", "--per-device-train-batch-size",
                "4", "--learning-rate", "1e-2", "--eval-steps", "2");
        assertEquals(0, r.code(), r.err());
        JsonNode config = new ObjectMapper().readTree(out.resolve("adapter_config.json").toFile());
        assertEquals("LORA", config.get("peft_type").asText());
        try (NamedTensors adapter = SafeTensors.read(out.resolve("adapter_model.safetensors"))) {
            assertFalse(adapter.names().isEmpty());
            adapter.names().forEach(k -> assertTrue(k.startsWith("base_model.model."), k));
        }
        JsonNode metrics = new ObjectMapper().readTree(out.resolve("metrics.json").toFile());
        assertEquals(4, metrics.get("train").size());
        assertEquals(4, metrics.get("train").get(3).get("step").asLong());
        assertTrue(metrics.get("eval").size() >= 2, metrics.toString());
        byte[] png = Files.readAllBytes(out.resolve("loss.png"));
        assertEquals(0x89, png[0] & 0xff);
        assertEquals("PNG", new String(png, 1, 3, StandardCharsets.US_ASCII));

        CliRun eval = run("eval", "--model", model(), "--adapter", out.toString(), "--data", firstLines(4).toString(),
                "--max-new-tokens", "4");
        assertEquals(0, eval.code(), eval.err());
        assertTrue(eval.out().contains("eval_loss ") && eval.out().contains("exact_match "), eval.out());

        CliRun generate = run("generate", "--model", model(), "--adapter", out.toString(), "--max-new-tokens", "3",
                "Question: Where does Bolami live?\nAnswer:", "Question: What is the job of Bolami?\nAnswer:");
        assertEquals(0, generate.code(), generate.err());
        assertEquals(2, generate.out().lines().filter(l -> l.startsWith("[")).count(), generate.out());

        Path merged = dir.resolve("merged");
        CliRun merge = run("merge", "--model", model(), "--adapter", out.toString(), "--out", merged.toString());
        assertEquals(0, merge.code(), merge.err());
        for (String file : List.of("config.json", "model.safetensors", "tokenizer.json")) {
            assertTrue(Files.isRegularFile(merged.resolve(file)), file);
        }
        // The merged model computes what base + adapter computes.
        CliRun mergedEval = run("eval", "--model", merged.toString(), "--data", firstLines(4).toString(),
                "--max-new-tokens", "4");
        assertEquals(eval.out().lines().findFirst(), mergedEval.out().lines().findFirst());
    }

    @Test
    void calibrationDataChoosesPafisFisherMaskAndTheAdapterSavesIt() throws Exception {
        Path config = dir.resolve("pafi.json");
        Files.writeString(config, "{\"peft_type\": \"PAFI\", \"target_modules\": [\"q_proj\", \"v_proj\"], "
                + "\"k\": 300, \"mask_type\": \"fisher\"}");
        Path out = dir.resolve("pafi");
        String data = firstLines(8).toString();
        CliRun refused = run("train", "--model", model(), "--data", data, "--out", dir.resolve("refused").toString(), "--max-steps", "2",
                "--adapter-config", config.toString());
        assertOneErrorLine(refused, "calibration");
        CliRun r = run("train", "--model", model(), "--data", data, "--out", out.toString(), "--max-steps", "2",
                "--per-device-train-batch-size", "4", "--adapter-config", config.toString(), "--calibration-data", data);
        assertEquals(0, r.code(), r.err());
        long indices = 0;
        try (NamedTensors saved = SafeTensors.read(out.resolve("adapter_model.safetensors"))) {
            for (String name : saved.names()) {
                indices += name.endsWith(".pafi_indices") ? 1 : 0;
            }
        }
        assertEquals(8, indices, "a Fisher mask's indices for q_proj and v_proj of the demo model's 4 layers");
    }

    @Test
    void intrinsicDimensionTrainsOneAdapterPerDAndReportsD90() throws Exception {
        Path out = dir.resolve("d90");
        CliRun r = run("intrinsic-dimension", "--model", model(), "--data", firstLines(16).toString(), "--eval-data",
                firstLines(4).toString(), "--out", out.toString(), "--dims", "400,40", "--max-steps", "2",
                "--per-device-train-batch-size", "4", "--max-new-tokens", "4", "--reference-score", "0.5");
        assertEquals(0, r.code(), r.err());
        JsonNode summary = new ObjectMapper().readTree(out.resolve("intrinsic_dimension.json").toFile());
        assertEquals(0.45, summary.get("threshold").asDouble(), 1e-12);
        JsonNode runs = summary.get("runs");
        assertEquals(2, runs.size());
        Integer d90 = null;
        for (int i = 0; i < 2; i++) {
            int d = runs.get(i).get("d").asInt();
            assertEquals(i == 0 ? 40 : 400, d, "the runs in increasing d");
            assertEquals(d, runs.get(i).get("trainable").asLong(), "SAID trains exactly d numbers");
            if (d90 == null && runs.get(i).get("exact_match").asDouble() >= 0.45) {
                d90 = d;
            }
            assertTrue(Files.isRegularFile(out.resolve("d" + d).resolve("adapter_model.safetensors")));
        }
        assertEquals(d90 == null, summary.get("d90").isNull());
        if (d90 != null) {
            assertEquals(d90.intValue(), summary.get("d90").asInt());
        }
        assertTrue(Files.size(out.resolve("score_vs_d.png")) > 0);
        assertTrue(r.out().contains("d90"), r.out());
    }

    @Test
    void resumeContinuesFromTheNewestCheckpointAndTheReportCoversTheWholeRun() throws Exception {
        Path out = dir.resolve("resumed");
        String data = firstLines(16).toString();
        CliRun first = run("train", "--model", model(), "--data", data, "--out", out.toString(), "--max-steps", "4",
                "--save-steps", "2", "--per-device-train-batch-size", "4");
        assertEquals(0, first.code(), first.err());
        CliRun second = run("train", "--model", model(), "--data", data, "--out", out.toString(), "--max-steps", "6",
                "--save-steps", "2", "--per-device-train-batch-size", "4", "--resume");
        assertEquals(0, second.code(), second.err());
        JsonNode metrics = new ObjectMapper().readTree(out.resolve("metrics.json").toFile());
        assertEquals(6, metrics.get("train").size());
        for (int i = 0; i < 6; i++) {
            assertEquals(i + 1, metrics.get("train").get(i).get("step").asLong());
        }
        assertEquals(4, metrics.get("summary").get("resumed_from_step").asLong());
        assertTrue(Files.isDirectory(out.resolve("checkpoint-6")));
    }

    @Test
    void badInputsGiveOneErrorLineAndWriteNothing() throws Exception {
        Path out = dir.resolve("never");
        String data = firstLines(4).toString();

        assertOneErrorLine(run("train", "--model", model(), "--data", dir.resolve("absent.jsonl").toString(),
                "--out", out.toString()), "data file '" + dir.resolve("absent.jsonl") + "' does not exist");

        Path malformed = dir.resolve("malformed.jsonl");
        Files.writeString(malformed, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": 7}\n");
        assertOneErrorLine(run("train", "--model", model(), "--data", malformed.toString(), "--out", out.toString()),
                malformed + ":2: \"completion\" must be a string");

        assertOneErrorLine(run("train", "--model", model(), "--data", data, "--out", out.toString(),
                "--method", "nosuchmethod"), "unknown or unsupported peft_type 'NOSUCHMETHOD'");

        Path small = dir.resolve("small-vocab");
        Files.createDirectories(small);
        Files.copy(demo().resolve("model/tokenizer.json"), small.resolve("tokenizer.json"));
        Files.copy(demo().resolve("model/model.safetensors"), small.resolve("model.safetensors"));
        Files.writeString(small.resolve("config.json"), Files.readString(demo().resolve("model/config.json"))
                .replaceAll("\"vocab_size\": \\d+", "\"vocab_size\": 100"));
        assertOneErrorLine(run("train", "--model", small.toString(), "--data", data, "--out", out.toString()),
                "ids but the model's vocab_size is 100");

        Path file = dir.resolve("a-file");
        Files.writeString(file, "keep");
        assertOneErrorLine(run("train", "--model", model(), "--data", data, "--out", file.toString()),
                "output directory '" + file + "' is a file");
        assertEquals("keep", Files.readString(file));

        assertFalse(Files.exists(out), "a failed run left " + out);
        try (Stream<Path> left = Files.list(dir)) {
            assertTrue(left.noneMatch(p -> p.getFileName().toString().endsWith(".tmp")));
        }
    }

    @Test
    void loraInitsFromDataAndTheConversionOfABaseChangingInit() throws Exception {
        String data = firstLines(16).toString();
        Path eva = dir.resolve("eva");
        CliRun r = run("train", "--model", model(), "--data", data, "--out", eva.toString(), "--max-steps", "2",
                "--per-device-train-batch-size", "8", "--lora-r", "2", "--target-modules", "q_proj,v_proj",
                "--init-lora-weights", "eva", "--init-data", data);
        assertEquals(0, r.code(), r.err());
        JsonNode config = new ObjectMapper().readTree(eva.resolve("adapter_config.json").toFile());
        assertEquals("eva", config.get("init_lora_weights").asText());
        assertEquals(2.0, config.get("eva_config").get("rho").asDouble());
        assertTrue(config.get("rank_pattern").isObject(), config.toString());

        assertOneErrorLine(run("train", "--model", model(), "--data", data, "--out", dir.resolve("corda").toString(),
                "--max-steps", "1", "--init-lora-weights", "corda"), "--init-data");
        assertFalse(Files.exists(dir.resolve("corda")));

        Path pissa = dir.resolve("pissa");
        Path initial = dir.resolve("pissa-initial");
        r = run("train", "--model", model(), "--data", data, "--out", pissa.toString(), "--max-steps", "2",
                "--per-device-train-batch-size", "4", "--target-modules", "q_proj,v_proj", "--init-lora-weights",
                "pissa", "--path-initial-model-for-weight-conversion", initial.toString());
        assertEquals(0, r.code(), r.err());
        JsonNode converted = new ObjectMapper().readTree(pissa.resolve("adapter_config.json").toFile());
        assertEquals(16, converted.get("r").asInt());
        assertEquals(32.0, converted.get("lora_alpha").asDouble());
        assertTrue(converted.get("init_lora_weights").asBoolean());
        JsonNode start = new ObjectMapper().readTree(initial.resolve("adapter_config.json").toFile());
        assertTrue(start.get("init_lora_weights").asBoolean());
        try (NamedTensors adapter = SafeTensors.read(pissa.resolve("adapter_model.safetensors"));
                Tensor a = adapter.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")) {
            assertEquals(16, a.shape()[0]);
        }
    }

    @Test
    void oneSeedGivesBitwiseTheSameRun() throws Exception {
        String data = firstLines(16).toString();
        List<byte[]> adapters = new ArrayList<>();
        for (String seed : List.of("7", "7", "8")) {
            Path out = dir.resolve("seed-" + adapters.size());
            CliRun r = run("train", "--model", model(), "--data", data, "--out", out.toString(), "--max-steps", "3",
                    "--per-device-train-batch-size", "4", "--lora-dropout", "0.1", "--seed", seed);
            assertEquals(0, r.code(), r.err());
            adapters.add(Files.readAllBytes(out.resolve("adapter_model.safetensors")));
        }
        assertTrue(Arrays.equals(adapters.get(0), adapters.get(1)), "--seed 7 twice gave different adapters");
        assertFalse(Arrays.equals(adapters.get(0), adapters.get(2)), "--seed 7 and 8 gave the same adapter");
    }

    @Test
    void inputsThatOnceGotAConfusingAnswerGetOneErrorLineNamingTheProblem() throws Exception {
        Path out = dir.resolve("never");
        String data = firstLines(4).toString();

        Path file = dir.resolve("model-file");
        Files.writeString(file, "not a model");
        assertOneErrorLine(run("train", "--model", file.toString(), "--data", data, "--out", out.toString()),
                "model path '" + file + "' is a file; expected an HF model directory");

        Path latin1 = dir.resolve("latin1.jsonl");
        Files.write(latin1, concat("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"caf",
                new byte[] {(byte) 0xE9}, "\", \"completion\": \"b\"}\n"));
        assertOneErrorLine(run("train", "--model", model(), "--data", latin1.toString(), "--out", out.toString()),
                latin1 + ":2: not UTF-8 text: byte 0xE9 at byte 16 of the line is invalid there");

        Path binary = dir.resolve("binary.jsonl");
        Files.write(binary, new byte[] {'{', 0, 0, 1, (byte) 0x89, 'P', 'N', 'G'});
        assertOneErrorLine(run("train", "--model", model(), "--data", binary.toString(), "--out", out.toString()),
                binary + ":1: binary data, not JSON text: a NUL byte at byte 2 of the line");
        assertOneErrorLine(run("generate", "--model", model(), "--prompts", latin1.toString()),
                latin1 + ":2: not UTF-8 text: byte 0xE9");

        // sysfs refuses new files to everyone, root included (who ignores permission bits).
        if (Files.isDirectory(Path.of("/sys/kernel"))) {
            assertOneErrorLine(run("train", "--model", model(), "--data", data, "--out", "/sys/kernel"),
                    "output directory '/sys/kernel' is not writable");
        }
        assertFalse(Files.exists(out), "a failed run left " + out);
    }

    private static byte[] concat(String head, byte[] middle, String tail) {
        byte[] a = head.getBytes(StandardCharsets.UTF_8);
        byte[] c = tail.getBytes(StandardCharsets.UTF_8);
        byte[] all = Arrays.copyOf(a, a.length + middle.length + c.length);
        System.arraycopy(middle, 0, all, a.length, middle.length);
        System.arraycopy(c, 0, all, a.length + middle.length, c.length);
        return all;
    }
}
