package org.peft4j.cli;

import java.util.ArrayList;
import java.util.List;
import org.peft4j.GenerationConfig;
import org.peft4j.Tensor;
import org.peft4j.data.DataRecord;
import org.peft4j.data.Example;
import org.peft4j.data.ExampleEncoder;

/** The held-out metrics of eval and demo, computed on one example at a time with the model as it is now. */
final class TaskMetrics {
    private TaskMetrics() {}

    /** One generation: the prompt's record, what the model wrote and whether it equals the reference. */
    record Generation(DataRecord record, String output, boolean exact) {}

    record ExactMatch(List<Generation> generations) {
        long correct() {
            return generations.stream().filter(Generation::exact).count();
        }

        double rate() {
            return generations.isEmpty() ? 0 : (double) correct() / generations.size();
        }

        String summary() {
            return String.format("%.3f (%d/%d)", rate(), correct(), generations.size());
        }
    }

    /**
     * Exact match of generation against the completion (or the chat's last assistant message), both with
     * surrounding whitespace removed, as the usual SQuAD-style normalisation leaves case and inner spaces alone.
     */
    static ExactMatch exactMatch(LoadedModel model, ExampleEncoder encoder, List<DataRecord> records,
                                 GenerationConfig config) {
        List<Generation> generations = new ArrayList<>();
        for (DataRecord record : records) {
            String output = model.complete(encoder.promptIds(record), config);
            generations.add(new Generation(record, output, output.strip().equals(ExampleEncoder.reference(record).strip())));
        }
        return new ExactMatch(generations);
    }

    /** Causal LM loss over every labelled target of the examples (each target weighs the same, as in HF's eval). */
    static double evalLoss(LoadedModel model, List<Example> examples) {
        double sum = 0;
        double targets = 0;
        for (Example example : examples) {
            Example.Sequence sequence = (Example.Sequence) example;
            double[] loss = model.loss(sequence.inputIds(), sequence.labels());
            sum += loss[0] * loss[1];
            targets += loss[1];
        }
        return targets > 0 ? sum / targets : Double.NaN;
    }

    /** Classification accuracy: the argmax of the model's logits against each example's class. */
    static double accuracy(LoadedModel model, List<Example> examples) {
        long correct = 0;
        for (Example example : examples) {
            Example.Classified classified = (Example.Classified) example;
            long[] ids = classified.inputIds();
            try (Tensor input = Tensor.of(ids, 1, ids.length);
                 Tensor logits = model.peft() != null ? model.peft().forward(input, null) : model.base.forward(input, null)) {
                float[] scores = logits.toFloatArray();
                int best = 0;
                for (int i = 1; i < scores.length; i++) {
                    best = scores[i] > scores[best] ? i : best;
                }
                correct += best == classified.label() ? 1 : 0;
            }
        }
        return examples.isEmpty() ? Double.NaN : (double) correct / examples.size();
    }
}
