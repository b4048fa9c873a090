package org.peft4j.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.BaseModel;
import org.peft4j.PeftException;
import org.peft4j.PeftModel;
import org.peft4j.Trainability;
import org.peft4j.Trainer;
import org.peft4j.report.AtomicFiles;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(
        name = "merge",
        mixinStandardHelpOptions = true,
        description = "Fold an adapter into its base model and write the result as an HF model directory "
                + "(config.json, model.safetensors, and the base model's tokenizer and generation files), loadable "
                + "by peft4j and transformers without PEFT.")
final class MergeCommand implements Callable<Integer> {
    @Mixin
    ConfigOption config;

    // The files beside the weights that describe tokenization and generation; copied unchanged when present.
    private static final List<String> COPIED = List.of("tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json");

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "HF base model directory")
    Path model;

    @Option(names = "--adapter", required = true, paramLabel = "DIR", description = "PEFT adapter directory")
    Path adapter;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "directory for the merged model")
    Path out;

    @Override
    public Integer call() {
        Trainer.checkOutputDir(out);
        try (LoadedModel loaded = LoadedModel.load(model)) {
            loaded.loadAdapter(adapter, Trainability.FROZEN);
            PeftModel peft = loaded.peft();
            try (BaseModel merged = peft.mergeAndUnload()) {
                merged.save(out);
            }
            for (String name : COPIED) {
                Path source = model.resolve(name);
                if (Files.isRegularFile(source)) {
                    copyAtomically(source, out.resolve(name));
                }
            }
        }
        System.out.println("merged model written to " + out);
        return 0;
    }

    private static void copyAtomically(Path source, Path target) {
        try {
            AtomicFiles.write(target, Files.readAllBytes(source));
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.IO, "cannot read '" + source + "': " + e.getMessage());
        }
    }
}
