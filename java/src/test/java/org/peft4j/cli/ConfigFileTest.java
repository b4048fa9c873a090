package org.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.peft4j.PeftException;
import picocli.CommandLine;

class ConfigFileTest {
    @TempDir
    Path dir;

    private TrainCommand parse(Path config, String... args) {
        TrainCommand command = new TrainCommand();
        CommandLine cli = new CommandLine(command);
        cli.setDefaultValueProvider(ConfigFile.read(config, cli.getCommandSpec()));
        cli.parseArgs(args);
        return command;
    }

    @Test
    void yamlAndJsonFillOptionsAndTheCommandLineOverrides() throws Exception {
        Path yaml = dir.resolve("train.yaml");
        Files.writeString(yaml, "model: m\ndata: d.jsonl\nout: o\nlearning_rate: 0.002\n"
                + "target-modules: [q_proj, v_proj]\npacking: true\nmax_steps: 30\n");
        TrainCommand fromYaml = parse(yaml, "--max-steps", "7");
        assertEquals(Path.of("m"), fromYaml.model);
        assertEquals(0.002, fromYaml.training.learningRate);
        assertEquals(List.of("q_proj", "v_proj"), fromYaml.adapter.targetModules);
        assertEquals(true, fromYaml.training.packing);
        assertEquals(7, fromYaml.training.maxSteps);

        Path json = dir.resolve("train.json");
        Files.writeString(json, "{\"model\": \"m\", \"data\": \"d\", \"out\": \"o\", \"lora_r\": 4}");
        TrainCommand fromJson = parse(json);
        assertEquals(4, fromJson.adapter.loraR);
        assertEquals(2e-4, fromJson.training.learningRate);
    }

    @Test
    void unknownKeysAndMissingFilesAreErrors() throws Exception {
        Path yaml = dir.resolve("bad.yaml");
        Files.writeString(yaml, "learning_rate: 0.1\nlearnin_rate: 0.2\n");
        PeftException unknown = assertThrows(PeftException.class, () -> parse(yaml));
        assertEquals("config file '" + yaml + "': 'learnin_rate' is not an option of train", unknown.getMessage());
        PeftException missing = assertThrows(PeftException.class, () -> parse(dir.resolve("absent.yaml")));
        assertEquals(PeftException.Kind.NOT_FOUND, missing.kind());
        assertEquals(Path.of("x"), ConfigFile.find(new String[] {"train", "--config=x"}));
        assertEquals(Path.of("y"), ConfigFile.find(new String[] {"train", "--config", "y"}));
    }
}
