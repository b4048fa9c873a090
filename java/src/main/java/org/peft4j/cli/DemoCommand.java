package org.peft4j.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.peft4j.GenerationConfig;
import org.peft4j.Peft4j;
import org.peft4j.PeftModel;
import org.peft4j.Trainer;
import org.peft4j.data.DataRecord;
import org.peft4j.data.ExampleEncoder;
import org.peft4j.data.JsonlReader;
import org.peft4j.report.TrainingReport;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import org.peft4j.config.LoraConfig;

@Command(
        name = "demo",
        mixinStandardHelpOptions = true,
        description = "Fine-tune the bundled demo model (demo/model, a small Llama pretrained on invented facts) with "
                + "LoRA to answer questions about them, and show held-out answers and exact match before and after. "
                + "Writes the adapter, metrics.json and loss.png into --out.")
final class DemoCommand implements Callable<Integer> {
    @Mixin
    ConfigOption config;

    @Option(names = "--out", paramLabel = "DIR", description = "output directory (default: ${DEFAULT-VALUE})")
    Path out = Path.of("runs/demo");

    @Option(names = "--max-steps", paramLabel = "N", description = "optimizer steps (default: ${DEFAULT-VALUE})")
    long maxSteps = 300;

    @Option(names = "--show", paramLabel = "N", description = "held-out questions printed before and after (default: ${DEFAULT-VALUE})")
    int show = 4;

    @Option(names = "--bench", description = "print one JSON line with the fine-tuning throughput instead of the walk-through")
    boolean bench;

    private static final int LORA_R = 8;

    @Override
    public Integer call() throws Exception {
        Trainer.checkOutputDir(out);
        Path demo = home().resolve("demo");
        List<DataRecord> trainRecords = JsonlReader.read(demo.resolve("data/train.jsonl"));
        List<DataRecord> evalRecords = JsonlReader.read(demo.resolve("data/eval.jsonl"));
        try (LoadedModel loaded = LoadedModel.load(demo.resolve("model"))) {
            ExampleEncoder encoder = new ExampleEncoder(loaded.tokenizer, null);
            GenerationConfig greedy = GenerationConfig.builder().maxNewTokens(8)
                    .eosTokenIds(loaded.tokenizer.eosTokenId().orElseThrow()).build();
            TaskMetrics.ExactMatch before = TaskMetrics.exactMatch(loaded, encoder, evalRecords, greedy);
            print("base model, held-out questions:", before);

            LoraConfig lora = LoraConfig.builder().r(LORA_R).loraAlpha(2 * LORA_R).allLinear().taskType("CAUSAL_LM").build();
            TrainingOptions training = new TrainingOptions();
            PeftModel peft = PeftModel.create(loaded.base, "default", lora, training.seed);
            loaded.attach(peft);
            training.learningRate = 2e-3;
            training.lrSchedulerType = "cosine";
            training.warmupSteps = maxSteps / 20;
            training.maxSteps = maxSteps;
            training.trainBatchSize = 16;
            training.evalBatchSize = 32;
            training.evalSteps = Math.max(1, maxSteps / 5);
            training.saveTotalLimit = 1;
            if (!bench) {
                System.out.printf("fine-tuning LoRA (r %d, all linear layers, %,d trainable parameters) for %d steps%n",
                        LORA_R, peft.trainableParameterCount(), maxSteps);
                System.out.flush();
            }
            TrainingReport report = new TrainingReport();
            report.put("base_model", "demo/model");
            report.put("peft_type", "LORA");
            report.put("trainable_parameters", peft.trainableParameterCount());
            TrainingRun.Totals totals = TrainingRun.train(peft, encoder.encode(trainRecords), encoder.encode(evalRecords),
                    training, out, loaded.tokenizer.padTokenId().orElse(0), false, report, null);

            TaskMetrics.ExactMatch after = TaskMetrics.exactMatch(loaded, encoder, evalRecords, greedy);
            report.put("exact_match_before", before.rate());
            report.put("exact_match_after", after.rate());
            report.put("eval_examples", evalRecords.size());
            report.write(out);
            if (bench) {
                Map<String, Object> line = new LinkedHashMap<>();
                line.put("workload", "demo-lora-train-cpu");
                line.put("threads", Peft4j.numThreads());
                line.put("steps", totals.steps());
                line.put("tokens", totals.tokens());
                line.put("train_s", Math.round(totals.seconds() * 10) / 10.0);
                line.put("tokens_per_s", Math.round(totals.tokensPerSecond()));
                line.put("exact_match_before", before.rate());
                line.put("exact_match_after", after.rate());
                System.out.println(new ObjectMapper().writeValueAsString(line));
                return 0;
            }
            print("adapter, held-out questions:", after);
            System.out.printf("fine-tuning: %d steps, %,d tokens in %.1f s (%.0f tokens/s)%n", totals.steps(),
                    totals.tokens(), totals.seconds(), totals.tokensPerSecond());
            System.out.println("held-out exact match: " + before.summary() + " before, " + after.summary() + " after");
            System.out.println("wrote " + out + ": adapter_config.json, adapter_model.safetensors, "
                    + TrainingReport.METRICS_FILE + ", " + TrainingReport.PLOT_FILE);
        }
        return 0;
    }

    private void print(String title, TaskMetrics.ExactMatch match) {
        if (bench) {
            return;
        }
        System.out.println(title);
        for (TaskMetrics.Generation g : match.generations().subList(0, Math.min(show, match.generations().size()))) {
            DataRecord.PromptCompletion pc = (DataRecord.PromptCompletion) g.record();
            System.out.printf("  %s -> '%s'   (expected '%s')%n", pc.prompt().replace("\n", " "), g.output().strip(),
                    pc.completion().strip());
        }
        System.out.flush();
    }

    /** The repository root: the {@code peft4j.home} property, else the folder above target/peft4j.jar (or target/classes). */
    static Path home() throws URISyntaxException {
        String given = System.getProperty("peft4j.home");
        if (given != null) {
            return Path.of(given);
        }
        Path code = Path.of(DemoCommand.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        return code.toAbsolutePath().getParent().getParent();
    }
}
