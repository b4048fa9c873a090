package org.peft4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.PeftModel;
import org.peft4j.Trainer;
import org.peft4j.TrainingData;
import org.peft4j.data.DataRecord;
import org.peft4j.data.Example;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.data.LabelSet;
import org.peft4j.report.TrainingReport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import org.peft4j.config.AdapterConfig;

@Command(
        name = "train",
        mixinStandardHelpOptions = true,
        description = "Fine-tune an adapter on a JSONL data file (text, prompt + completion, messages, or text + label) "
                + "and write it in PEFT's format into --out, with metrics.json and loss.png beside it and checkpoints "
                + "in --out/checkpoint-<step>. Options may come from a JSON or YAML file (--config).")
final class TrainCommand implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(TrainCommand.class);

    @Mixin
    ConfigOption config;

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "HF base model directory with tokenizer.json")
    Path model;

    @Option(names = "--data", required = true, split = ",", paramLabel = "FILE",
            description = "training data (JSONL); several files (repeated or comma-separated) must share one format")
    List<Path> data;

    @Option(names = "--eval-data", paramLabel = "FILE", description = "evaluation data (JSONL), for eval loss and early stopping")
    Path evalData;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "output directory: adapter, report, checkpoints")
    Path out;

    @Option(names = "--labels", split = ",", paramLabel = "NAME",
            description = "class names in id order (text + label data; default: the training labels, sorted)")
    List<String> labels = new ArrayList<>();

    @Option(names = "--resume", description = "continue from the newest checkpoint in --out")
    boolean resume;

    @Option(names = "--calibration-data", paramLabel = "FILE",
            description = "examples (JSONL, the training data's format) that methods scoring the base model's parameters "
                    + "on data read when the adapter is made (PaFi's Fisher mask)")
    Path calibrationData;

    @Mixin
    AdapterOptions adapter;

    @Mixin
    TrainingOptions training;

    @Override
    public Integer call() {
        Trainer.checkOutputDir(out);
        List<DataRecord> trainRecords = JsonlReader.readAll(data);
        List<DataRecord> evalRecords = evalData != null ? JsonlReader.read(evalData) : List.of();
        boolean classification = trainRecords.get(0) instanceof DataRecord.Labeled;
        AdapterConfig adapterConfig = adapter.toConfig(classification ? "SEQ_CLS" : "CAUSAL_LM");
        try (LoadedModel loaded = LoadedModel.load(model)) {
            LabelSet labelSet = !classification ? null : labels.isEmpty() ? LabelSet.from(trainRecords) : LabelSet.of(labels);
            ExampleEncoder encoder = new ExampleEncoder(loaded.tokenizer, labelSet);
            List<Example> train = encoder.encode(trainRecords);
            List<Example> eval = encoder.encode(evalRecords);
            PeftModel peft = calibrationData == null
                    ? PeftModel.create(loaded.base, "default", adapterConfig, training.seed)
                    : createCalibrated(loaded, encoder, adapterConfig);
            loaded.attach(peft);
            LOG.info("{}: {} training and {} eval examples, {} adapter with {} trainable parameters", model,
                    train.size(), eval.size(), adapterConfig.peftType(), peft.trainableParameterCount());
            TrainingReport report = new TrainingReport();
            report.put("base_model", model.toString());
            report.put("data", data.stream().map(Path::toString).toList());
            report.put("peft_type", adapterConfig.peftType());
            report.put("trainable_parameters", peft.trainableParameterCount());
            if (labelSet != null) {
                report.put("labels", labelSet.asMap());
            }
            TrainingRun.Totals totals = TrainingRun.train(peft, train, eval, training, out,
                    loaded.tokenizer.padTokenId().orElse(0), resume, report);
            report.write(out);
            LOG.info("{} steps, {} tokens in {} s ({} tokens/s)", totals.steps(), totals.tokens(),
                    String.format("%.1f", totals.seconds()), String.format("%.0f", totals.tokensPerSecond()));
        }
        System.out.println("adapter, metrics.json and loss.png written to " + out);
        return 0;
    }

    private PeftModel createCalibrated(LoadedModel loaded, ExampleEncoder encoder, AdapterConfig adapterConfig) {
        try (TrainingData calibration = TrainingData.of(encoder.encode(JsonlReader.read(calibrationData)))) {
            return PeftModel.create(loaded.base, "default", adapterConfig, training.seed, calibration);
        }
    }
}
