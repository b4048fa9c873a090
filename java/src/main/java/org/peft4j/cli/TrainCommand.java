package org.peft4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.peft4j.PeftException;
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

    @Option(names = {"--init-data", "--calibration-data"}, split = ",", paramLabel = "FILE",
            description = "data (JSONL, the --data formats) the base model runs over when the adapter is made: LoRA's "
                    + "data-driven inits (init_lora_weights corda, eva, lora_ga) and PaFi's Fisher mask (mask_type "
                    + "fisher, its calibration examples); examples cut to --max-seq-length, batches of "
                    + "--per-device-train-batch-size (CorDA and PaFi take each example alone)")
    List<Path> initData = new ArrayList<>();

    @Option(names = "--path-initial-model-for-weight-conversion", paramLabel = "DIR",
            description = "for inits that move part of the base weight into the adapter (pissa, olora, corda, lora_ga): "
                    + "the adapter as initialised is written to DIR, and the trained adapter in --out is converted into "
                    + "a LoRA of rank 2r that applies to the untouched base model (PEFT's save_pretrained option)")
    Path pathInitialModelForWeightConversion;

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
            PeftModel peft;
            if (!initData.isEmpty()) {
                List<Example> initExamples = encoder.encode(JsonlReader.readAll(initData));
                try (TrainingData data = TrainingData.of(initExamples)) {
                    peft = PeftModel.create(loaded.base, "default", adapterConfig, training.seed, data,
                            training.trainBatchSize, training.maxSeqLength, loaded.tokenizer.padTokenId().orElse(0));
                }
            } else if (PeftModel.initialisesFromData(adapterConfig)) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT,
                        "the adapter's init_lora_weights initialises from data: pass --init-data FILE");
            } else {
                peft = PeftModel.create(loaded.base, "default", adapterConfig, training.seed);
            }
            loaded.attach(peft);
            if (pathInitialModelForWeightConversion != null) {
                peft.save(pathInitialModelForWeightConversion, "default");
            } else if (PeftModel.initialisationLeavesResidualBase(adapterConfig)) {
                LOG.warn("the adapter's init_lora_weights leaves a residual base model: the adapter in {} applies to it "
                        + "(PEFT and peft4j decompose the original base again on loading where the init is "
                        + "deterministic); --path-initial-model-for-weight-conversion DIR saves one for the untouched base",
                        out);
            }
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
                    loaded.tokenizer.padTokenId().orElse(0), resume, report, pathInitialModelForWeightConversion);
            report.write(out);
            LOG.info("{} steps, {} tokens in {} s ({} tokens/s)", totals.steps(), totals.tokens(),
                    String.format("%.1f", totals.seconds()), String.format("%.0f", totals.tokensPerSecond()));
        }
        System.out.println("adapter, metrics.json and loss.png written to " + out);
        return 0;
    }
}
