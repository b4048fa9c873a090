package org.peft4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.peft4j.config.AdapterConfig;
import org.peft4j.GenerationConfig;
import org.peft4j.config.IntrinsicDimensionConfig;
import org.peft4j.config.LayerFreezingConfig;
import org.peft4j.PeftException;
import org.peft4j.PeftModel;
import org.peft4j.Trainer;
import org.peft4j.data.DataRecord;
import org.peft4j.data.Example;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.data.LabelSet;
import org.peft4j.report.AtomicFiles;
import org.peft4j.report.TrainingReport;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * The intrinsic-dimension measurement of Aghajanyan et al.: SAID (or DID) adapters of several dimensions d trained on
 * one task, each scored on held-out data against a full fine-tuning reference, and d90, the smallest d that reaches 90%
 * of the reference's score.
 */
@Command(
        name = "intrinsic-dimension",
        mixinStandardHelpOptions = true,
        description = "Train an INTRINSIC_DIMENSION adapter (SAID, or DID with --did) for each d of --dims on the task, "
                + "score each on --eval-data (exact match, or accuracy for text + label data) against a reference, "
                + "and report d90: the smallest d reaching 90% of the reference. The reference is fine-tuning every "
                + "layer of the model (LAYER_FREEZING over all layers) with the same options, or --reference-score. "
                + "Writes intrinsic_dimension.json, score_vs_d.png and each run's adapter under --out.")
final class IntrinsicDimensionCommand implements Callable<Integer> {
    @Mixin
    ConfigOption config;

    @Option(names = "--model", required = true, paramLabel = "DIR", description = "HF base model directory with tokenizer.json")
    Path model;

    @Option(names = "--data", required = true, split = ",", paramLabel = "FILE", description = "training data (JSONL)")
    List<Path> data;

    @Option(names = "--eval-data", required = true, paramLabel = "FILE", description = "held-out data (JSONL) to score")
    Path evalData;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "output directory")
    Path out;

    @Option(names = "--dims", required = true, split = ",", paramLabel = "D", description = "the dimensions d to train")
    List<Integer> dims;

    @Option(names = "--did", description = "plain DID: no per-tensor scales (default: SAID)")
    boolean did;

    @Option(names = "--projection", paramLabel = "NAME", description = "fastfood, dense or sparse (default: ${DEFAULT-VALUE})")
    String projection = "fastfood";

    @Option(names = "--target-modules", split = ",", paramLabel = "NAME",
            description = "modules whose parameters move in the subspace (default: all-linear)")
    List<String> targetModules = new ArrayList<>();

    @Option(names = "--reference-score", paramLabel = "X",
            description = "the full fine-tuning score to measure against, instead of training the reference")
    Double referenceScore;

    @Option(names = "--labels", split = ",", paramLabel = "NAME", description = "class names in id order (text + label data)")
    List<String> labels = new ArrayList<>();

    @Mixin
    TrainingOptions training;

    // Exact match is scored with greedy decoding; --seed is the training seed.
    @Option(names = "--max-new-tokens", paramLabel = "N",
            description = "tokens generated per held-out prompt for exact match (default: ${DEFAULT-VALUE})")
    int maxNewTokens = 32;

    /** One trained adapter and its held-out score. */
    record Run(String name, long trainable, double score, double tokensPerSecond) {}

    @Override
    public Integer call() {
        if (dims.stream().anyMatch(d -> d <= 0)) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "--dims must be positive, got " + dims);
        }
        Trainer.checkOutputDir(out);
        List<DataRecord> trainRecords = JsonlReader.readAll(data);
        List<DataRecord> evalRecords = JsonlReader.read(evalData);
        boolean classification = trainRecords.get(0) instanceof DataRecord.Labeled;
        if (!classification && evalRecords.get(0) instanceof DataRecord.Text) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "--eval-data '" + evalData + "' holds plain text, "
                    + "which has no answer to score: give prompt + completion, messages or text + label data");
        }
        try (LoadedModel loaded = LoadedModel.load(model)) {
            LabelSet labelSet = !classification ? null : labels.isEmpty() ? LabelSet.from(trainRecords) : LabelSet.of(labels);
            ExampleEncoder encoder = new ExampleEncoder(loaded.tokenizer, labelSet);
            List<Example> train = encoder.encode(trainRecords);
            List<Example> eval = encoder.encode(evalRecords);
            Scorer scorer = new Scorer(loaded, encoder, evalRecords, eval, classification,
                    greedy(loaded));
            double baseScore = scorer.score();
            System.out.printf("base model: %s %.4f%n", scorer.metric(), baseScore);

            List<Run> runs = new ArrayList<>();
            Run reference = null;
            double referenceValue;
            if (referenceScore != null) {
                referenceValue = referenceScore;
            } else {
                LayerFreezingConfig full = LayerFreezingConfig.topLayers(numLayers(model));
                reference = train(loaded, "full", full, train, eval, scorer);
                referenceValue = reference.score();
                System.out.printf("full fine-tuning (every layer): %s %.4f, %d trainable%n", scorer.metric(),
                        referenceValue, reference.trainable());
            }
            double threshold = 0.9 * referenceValue;
            Integer d90 = null;
            for (int d : dims.stream().sorted().toList()) {
                IntrinsicDimensionConfig.Builder builder = IntrinsicDimensionConfig.builder().intrinsicDimension(d)
                        .said(!did).projection(projection);
                if (targetModules.isEmpty() || targetModules.equals(List.of("all-linear"))) {
                    builder.allLinear();
                } else {
                    builder.targetModules(targetModules.toArray(String[]::new));
                }
                Run run = train(loaded, "d" + d, builder.build(), train, eval, scorer);
                runs.add(run);
                boolean reached = run.score() >= threshold;
                if (reached && d90 == null) {
                    d90 = d;
                }
                System.out.printf("d %8d: %s %.4f%s%n", d, scorer.metric(), run.score(), reached ? "  (>= 90%)" : "");
            }
            System.out.println(d90 != null ? "d90 = " + d90 + " (" + scorer.metric() + " >= " + String.format("%.4f", threshold)
                    + ", 90% of " + String.format("%.4f", referenceValue) + ")"
                    : "d90 not reached: no d scored " + String.format("%.4f", threshold) + " (90% of "
                            + String.format("%.4f", referenceValue) + ")");
            writeSummary(scorer.metric(), baseScore, reference, referenceValue, runs, d90);
            AtomicFiles.write(out.resolve("score_vs_d.png"), plot(scorer.metric(), runs, threshold));
        }
        System.out.println("intrinsic_dimension.json, score_vs_d.png and the adapters written to " + out);
        return 0;
    }

    private GenerationConfig greedy(LoadedModel loaded) {
        GenerationConfig.Builder builder = GenerationConfig.builder().maxNewTokens(maxNewTokens);
        loaded.tokenizer.eosTokenId().ifPresent(builder::eosTokenIds);
        loaded.tokenizer.padTokenId().ifPresent(builder::padTokenId);
        return builder.build();
    }

    private Run train(LoadedModel loaded, String name, AdapterConfig adapterConfig, List<Example> train,
                      List<Example> eval, Scorer scorer) {
        Path dir = out.resolve(name);
        PeftModel peft = loaded.peft();
        if (peft == null) {
            peft = PeftModel.create(loaded.base, name, adapterConfig, training.seed);
            loaded.attach(peft);
        } else {
            peft.addAdapter(name, adapterConfig, training.seed);
            peft.setAdapter(name);
        }
        long trainable = peft.trainableParameterCount();
        TrainingReport report = new TrainingReport();
        report.put("peft_type", adapterConfig.peftType());
        report.put("trainable_parameters", trainable);
        TrainingRun.Totals totals = TrainingRun.train(peft, train, eval, training, dir,
                loaded.tokenizer.padTokenId().orElse(0), false, report, null);
        double score = scorer.score();
        report.put("held_out_" + scorer.metric(), score);
        report.write(dir);
        peft.deleteAdapter(name);
        return new Run(name, trainable, score, totals.tokensPerSecond());
    }

    private void writeSummary(String metric, double baseScore, Run reference, double referenceValue, List<Run> runs,
                              Integer d90) {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("metric", metric);
        root.put("base_model", baseScore);
        root.put("reference", referenceValue);
        root.put("reference_trained", reference != null);
        root.put("threshold", 0.9 * referenceValue);
        root.put("said", !did);
        root.put("projection", projection);
        root.put("d90", d90);
        List<Map<String, Object>> rows = new ArrayList<>();
        for (Run r : runs) {
            rows.add(Map.of("d", Integer.parseInt(r.name().substring(1)), "trainable", r.trainable(), metric, r.score(),
                    "tokens_per_second", r.tokensPerSecond()));
        }
        root.put("runs", rows);
        try {
            AtomicFiles.write(out.resolve("intrinsic_dimension.json"),
                    new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsBytes(root));
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.INTERNAL, "cannot serialise the summary: " + e.getMessage());
        }
    }

    private static byte[] plot(String metric, List<Run> runs, double threshold) {
        System.setProperty("java.awt.headless", "true");
        XYChart chart = new XYChartBuilder().width(800).height(480).title("Held-out " + metric + " against d")
                .xAxisTitle("d").yAxisTitle(metric).build();
        chart.getStyler().setXAxisLogarithmic(true);
        double[] d = runs.stream().mapToDouble(r -> Integer.parseInt(r.name().substring(1))).toArray();
        chart.addSeries("SAID/DID", d, runs.stream().mapToDouble(Run::score).toArray()).setMarker(SeriesMarkers.CIRCLE);
        chart.addSeries("90% of the reference", new double[] {d[0], d[d.length - 1]}, new double[] {threshold, threshold})
                .setMarker(SeriesMarkers.NONE);
        try {
            return BitmapEncoder.getBitmapBytes(chart, BitmapEncoder.BitmapFormat.PNG);
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.IO, "cannot draw the plot: " + e.getMessage());
        }
    }

    /** The model's layer count from its config.json (num_hidden_layers, n_layer or num_layers). */
    private static int numLayers(Path modelDir) {
        Path file = modelDir.resolve("config.json");
        try {
            JsonNode config = new ObjectMapper().readTree(file.toFile());
            for (String field : List.of("num_hidden_layers", "n_layer", "num_layers")) {
                if (config.path(field).isIntegralNumber()) {
                    return config.path(field).asInt();
                }
            }
            throw new PeftException(PeftException.Kind.FORMAT, "'" + file + "' names no layer count (num_hidden_layers, "
                    + "n_layer or num_layers): give --reference-score");
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.FORMAT, "cannot read '" + file + "': " + e.getMessage());
        }
    }

    /** The held-out score with the model as it is now: exact match, or accuracy for classification. */
    private record Scorer(LoadedModel loaded, ExampleEncoder encoder, List<DataRecord> records, List<Example> examples,
                          boolean classification, GenerationConfig generation) {
        String metric() {
            return classification ? "accuracy" : "exact_match";
        }

        double score() {
            if (classification) {
                return TaskMetrics.accuracy(loaded, examples);
            }
            return TaskMetrics.exactMatch(loaded, encoder, records, generation).rate();
        }
    }
}
