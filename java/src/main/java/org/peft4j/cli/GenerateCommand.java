package org.peft4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.GenerationConfig;
import org.peft4j.PeftException;
import org.peft4j.Trainability;
import org.peft4j.data.ChatMessage;
import org.peft4j.data.DataRecord;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(
        name = "generate",
        mixinStandardHelpOptions = true,
        description = "Generate text after each prompt with a base model, with or without an adapter, and print "
                + "each completion (numbered when there are several).")
final class GenerateCommand implements Callable<Integer> {
    @Mixin
    ConfigOption config;

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "HF model directory with tokenizer.json")
    Path model;

    @Option(names = "--adapter", paramLabel = "DIR", description = "PEFT adapter directory to generate through")
    Path adapter;

    @Option(names = "--prompts", paramLabel = "FILE",
            description = "JSONL data file whose prompts to complete (prompt + completion or messages records, as eval "
                    + "reads them; the reference answer is not shown to the model)")
    Path promptsFile;

    @Option(names = "--chat", description = "render each PROMPT as a user message with peft4j's chat template")
    boolean chat;

    @Mixin
    GenerationOptions generation;

    @Parameters(paramLabel = "PROMPT", arity = "0..*", description = "prompt text")
    List<String> prompts = new ArrayList<>();

    @Override
    public Integer call() {
        List<long[]> inputs = new ArrayList<>();
        List<DataRecord> records = promptsFile != null ? JsonlReader.read(promptsFile) : List.of();
        try (LoadedModel loaded = LoadedModel.load(model)) {
            if (adapter != null) {
                loaded.loadAdapter(adapter, Trainability.FROZEN);
            }
            ExampleEncoder encoder = new ExampleEncoder(loaded.tokenizer, null);
            for (String prompt : prompts) {
                inputs.add(chat ? encoder.chatPrompt(List.of(new ChatMessage("user", prompt)))
                        : loaded.tokenizer.encode(prompt, true));
            }
            for (DataRecord record : records) {
                inputs.add(encoder.promptIds(record));
            }
            if (inputs.isEmpty()) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "no prompt given (PROMPT or --prompts FILE)");
            }
            GenerationConfig config = generation.toConfig(loaded.tokenizer);
            for (int i = 0; i < inputs.size(); i++) {
                String completion = loaded.complete(inputs.get(i), config);
                System.out.println(inputs.size() > 1 ? "[" + (i + 1) + "] " + completion : completion);
                System.out.flush();
            }
        }
        return 0;
    }
}
