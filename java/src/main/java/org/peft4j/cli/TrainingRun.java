package org.peft4j.cli;

import java.nio.file.Path;
import java.util.List;
import org.peft4j.PeftModel;
import org.peft4j.StepMetrics;
import org.peft4j.Trainer;
import org.peft4j.TrainingData;
import org.peft4j.data.Example;
import org.peft4j.report.TrainingReport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One training run as train and demo do it: the examples into the trainer, a progress bar while it steps, every
 * step and evaluation into the report, then the adapter saved into the output directory.
 */
final class TrainingRun {
    private static final Logger LOG = LoggerFactory.getLogger(TrainingRun.class);

    private TrainingRun() {}

    /** This process's part of the run and its throughput over its wall time (evaluations included). */
    record Totals(long steps, long tokens, double seconds) {
        double tokensPerSecond() {
            return seconds > 0 ? tokens / seconds : 0;
        }
    }

    /**
     * {@code pathInitialModelForWeightConversion}: where the adapter was saved right after its PiSSA/OLoRA/CorDA/LoRA-GA
     * initialisation; the adapter in {@code out} is then converted against it (PEFT's save_pretrained option). Null:
     * the adapter as trained.
     */
    static Totals train(PeftModel model, List<Example> trainExamples, List<Example> evalExamples,
                        TrainingOptions options, Path out, long padTokenId, boolean resume, TrainingReport report,
                        Path pathInitialModelForWeightConversion) {
        boolean classification = trainExamples.get(0) instanceof Example.Classified;
        try (TrainingData train = TrainingData.of(trainExamples);
             TrainingData eval = evalExamples.isEmpty() ? null : TrainingData.of(evalExamples)) {
            Trainer.Builder builder = Trainer.builder().model(model).trainData(train);
            if (eval != null) {
                builder.evalData(eval);
            }
            try (Trainer trainer = options.apply(builder, out, padTokenId, classification).build()) {
                trainer.warnings().forEach(LOG::warn);
                if (resume) {
                    trainer.resume();
                }
                long start = System.nanoTime();
                long tokensBefore = trainer.metrics().tokensSeen();
                long stepsBefore = trainer.metrics().globalStep();
                ProgressBar bar = ProgressBar.onStderr(trainer.metrics().maxSteps());
                StepMetrics last = trainer.train(m -> {
                    if (m.evaluated()) {
                        bar.message(String.format("step %d: eval_loss %.4f%s", m.globalStep(), m.evalLoss(),
                                Double.isNaN(m.evalAccuracy()) ? "" : String.format(" eval_accuracy %.4f", m.evalAccuracy())));
                    }
                    bar.update(m.globalStep(), m.maxSteps(), m.loss(), m.tokensPerSecond());
                });
                bar.finish();
                if (last.stoppedEarly()) {
                    bar.message("stopped early at step " + last.globalStep() + " (eval loss no longer improving)");
                }
                if (pathInitialModelForWeightConversion == null) {
                    trainer.saveAdapter(out);
                } else {
                    model.save(out, "default", pathInitialModelForWeightConversion);
                }
                Totals totals = new Totals(last.globalStep() - stepsBefore, last.tokensSeen() - tokensBefore,
                        (System.nanoTime() - start) / 1e9);
                // Every step's entry, a resumed run's earlier ones from the checkpoint included.
                report.addLogHistory(trainer.logHistory());
                report.put("steps", last.globalStep());
                report.put("epochs", last.epoch());
                report.put("stopped_early", last.stoppedEarly());
                report.put("train_tokens", last.tokensSeen());
                report.put("train_seconds", totals.seconds());
                report.put("train_tokens_per_second", totals.tokensPerSecond());
                if (resume) {
                    report.put("resumed_from_step", stepsBefore);
                }
                return totals;
            }
        }
    }
}
