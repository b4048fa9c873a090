package org.peft4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.Trainability;
import org.peft4j.data.DataRecord;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.data.LabelSet;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(
        name = "eval",
        mixinStandardHelpOptions = true,
        description = "Evaluate a base model, with or without an adapter, on a JSONL file: eval loss over the labelled "
                + "tokens; exact match of greedy generation against the completion (prompt + completion and messages "
                + "files); accuracy (text + label files, sequence classification models).")
final class EvalCommand implements Callable<Integer> {
    @Mixin
    ConfigOption config;

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "HF model directory with tokenizer.json")
    Path model;

    @Option(names = "--adapter", paramLabel = "DIR", description = "PEFT adapter directory to evaluate")
    Path adapter;

    @Option(names = "--data", required = true, paramLabel = "FILE", description = "JSONL data file")
    Path data;

    @Option(names = "--labels", split = ",", paramLabel = "NAME",
            description = "class names in id order (text + label files; default: the file's labels, sorted)")
    List<String> labels = new ArrayList<>();

    @Option(names = "--show", paramLabel = "N", description = "print the first N generations (default: ${DEFAULT-VALUE})")
    int show = 0;

    @Mixin
    GenerationOptions generation;

    @Override
    public Integer call() {
        List<DataRecord> records = JsonlReader.read(data);
        try (LoadedModel loaded = LoadedModel.load(model)) {
            if (adapter != null) {
                loaded.loadAdapter(adapter, Trainability.FROZEN);
            }
            boolean classification = records.get(0) instanceof DataRecord.Labeled;
            LabelSet labelSet = !classification ? null : labels.isEmpty() ? LabelSet.from(records) : LabelSet.of(labels);
            ExampleEncoder encoder = new ExampleEncoder(loaded.tokenizer, labelSet);
            if (classification) {
                System.out.printf("accuracy %.4f%n", TaskMetrics.accuracy(loaded, encoder.encode(records)));
                return 0;
            }
            System.out.printf("eval_loss %.4f%n", TaskMetrics.evalLoss(loaded, encoder.encode(records)));
            if (!(records.get(0) instanceof DataRecord.Text)) {
                TaskMetrics.ExactMatch match = TaskMetrics.exactMatch(loaded, encoder, records,
                        generation.toConfig(loaded.tokenizer));
                match.generations().stream().limit(show).forEach(g -> System.out.println(
                        "  " + g.record().source() + ": " + (g.exact() ? "ok   " : "wrong") + " " + g.output().strip()));
                System.out.println("exact_match " + match.summary());
            }
        }
        return 0;
    }
}
