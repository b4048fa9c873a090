package org.peft4j.report;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.markers.SeriesMarkers;
import org.peft4j.PeftException;

/**
 * What a training run leaves beside its adapter: {@code metrics.json} (every step's loss, learning rate, gradient
 * norm and throughput, every evaluation, and summary values such as exact match before and after) and
 * {@code loss.png}, the train and eval loss against the step.
 */
public final class TrainingReport {
    public static final String METRICS_FILE = "metrics.json";
    public static final String PLOT_FILE = "loss.png";

    /** One optimizer step. */
    public record Step(long step, double epoch, double loss, double learningRate, double gradNorm,
                       double tokensPerSecond) {}

    /** One evaluation; {@code accuracy} is NaN for causal LMs. */
    public record Evaluation(long step, double loss, double accuracy) {}

    private final List<Step> steps = new ArrayList<>();
    private final List<Evaluation> evaluations = new ArrayList<>();
    private final Map<String, Object> summary = new LinkedHashMap<>();

    /**
     * Adds the steps and evaluations of a trainer's log history ({@link org.peft4j.Trainer#logHistory()}: HF's
     * log_history, which after a resume holds the checkpoint's earlier entries too), so that the report covers
     * the whole training.
     */
    public void addLogHistory(String logHistoryJson) {
        JsonNode history;
        try {
            history = new ObjectMapper().readTree(logHistoryJson);
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.FORMAT, "the trainer's log history is not JSON: " + e.getMessage());
        }
        for (JsonNode entry : history) {
            long step = entry.path("step").asLong();
            if (entry.has("loss")) {
                steps.add(new Step(step, number(entry, "epoch"), number(entry, "loss"), number(entry, "learning_rate"),
                        number(entry, "grad_norm"), number(entry, "tokens_per_second")));
            } else if (entry.has("eval_loss")) {
                evaluations.add(new Evaluation(step, number(entry, "eval_loss"), number(entry, "eval_accuracy")));
            }
        }
    }

    private static double number(JsonNode node, String field) {
        return node.path(field).isNumber() ? node.path(field).asDouble() : Double.NaN;
    }

    /** A summary value (a number, a string, a list or map of them) written under "summary". */
    public void put(String key, Object value) {
        summary.put(key, value);
    }

    public List<Step> steps() {
        return List.copyOf(steps);
    }

    public List<Evaluation> evaluations() {
        return List.copyOf(evaluations);
    }

    /** Writes metrics.json and loss.png into {@code dir}, each atomically. */
    public void write(Path dir) {
        AtomicFiles.write(dir.resolve(METRICS_FILE), metricsJson());
        AtomicFiles.write(dir.resolve(PLOT_FILE), lossPlot());
    }

    byte[] metricsJson() {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("summary", summary);
        root.put("train", steps.stream().map(s -> finite(Map.of("step", s.step(), "epoch", s.epoch(), "loss", s.loss(),
                "learning_rate", s.learningRate(), "grad_norm", s.gradNorm(), "tokens_per_second",
                s.tokensPerSecond()))).toList());
        root.put("eval", evaluations.stream().map(e -> finite(Map.of("step", e.step(), "eval_loss", e.loss(),
                "eval_accuracy", e.accuracy()))).toList());
        try {
            return new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsBytes(root);
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.INTERNAL, "cannot serialise the metrics: " + e.getMessage());
        }
    }

    // JSON has no NaN: values that are not defined (accuracy of a causal LM) are left out.
    private static Map<String, Object> finite(Map<String, Object> values) {
        Map<String, Object> kept = new LinkedHashMap<>();
        values.entrySet().stream().sorted(Map.Entry.comparingByKey()).forEach(e -> {
            if (!(e.getValue() instanceof Double d) || Double.isFinite(d)) {
                kept.put(e.getKey(), e.getValue());
            }
        });
        return kept;
    }

    byte[] lossPlot() {
        System.setProperty("java.awt.headless", "true");
        XYChart chart = new XYChartBuilder().width(800).height(480).title("Training loss").xAxisTitle("step")
                .yAxisTitle("loss").build();
        chart.getStyler().setMarkerSize(4);
        // Losses span orders of magnitude (12 at the start of the demo, 0.01 at its end): a log axis shows both ends.
        boolean positive = steps.stream().allMatch(s -> s.loss() > 0)
                && evaluations.stream().allMatch(e -> !Double.isFinite(e.loss()) || e.loss() > 0);
        chart.getStyler().setYAxisLogarithmic(positive && !steps.isEmpty());
        if (!steps.isEmpty()) {
            chart.addSeries("train", steps.stream().mapToDouble(Step::step).toArray(),
                    steps.stream().mapToDouble(Step::loss).toArray()).setMarker(SeriesMarkers.NONE);
        }
        List<Evaluation> finiteEval = evaluations.stream().filter(e -> Double.isFinite(e.loss())).toList();
        if (!finiteEval.isEmpty()) {
            chart.addSeries("eval", finiteEval.stream().mapToDouble(Evaluation::step).toArray(),
                    finiteEval.stream().mapToDouble(Evaluation::loss).toArray()).setMarker(SeriesMarkers.CIRCLE);
        }
        try {
            return BitmapEncoder.getBitmapBytes(chart, BitmapEncoder.BitmapFormat.PNG);
        } catch (IOException e) {
            throw new PeftException(PeftException.Kind.IO, "cannot draw the loss plot: " + e.getMessage());
        }
    }
}
