package org.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The Java API over the base models against the golden transformers outputs and independent Java computations. */
class BaseModelTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** One golden case of the manifest. */
    private record GoldenCase(String name, String task, double rtol, double atol, Path io) {}

    private static Path modelDir(String arch) {
        return TestFiles.golden().resolve("models").resolve(arch);
    }

    private static List<GoldenCase> cases(String arch) throws IOException {
        JsonNode manifest = JSON.readTree(TestFiles.golden().resolve("manifest.json").toFile());
        List<GoldenCase> out = new ArrayList<>();
        for (JsonNode c : manifest.get("cases")) {
            if (!c.get("arch").asText().equals(arch)) {
                continue;
            }
            String name = c.get("name").asText();
            out.add(new GoldenCase(name, c.get("task").asText(), c.get("tolerance").get("rtol").asDouble(),
                    c.get("tolerance").get("atol").asDouble(),
                    TestFiles.golden().resolve("cases").resolve(name).resolve(c.get("io").asText())));
        }
        assertFalse(out.isEmpty(), "no golden cases for " + arch);
        return out;
    }

    /** A llama case whose adapter starts as the identity: its logits, loss and greedy_ids are the base model's. */
    private static GoldenCase identityCase() throws IOException {
        for (GoldenCase c : cases("llama")) {
            try (NamedTensors io = SafeTensors.read(c.io())) {
                if (!io.contains("base_logits") || !io.contains("greedy_ids")) {
                    continue;
                }
                try (Tensor logits = io.get("logits"); Tensor base = io.get("base_logits")) {
                    if (Arrays.equals(logits.toFloatArray(), base.toFloatArray())) {
                        return c;
                    }
                }
            }
        }
        throw new AssertionError("no golden llama case whose logits equal its base_logits");
    }

    private static void assertClose(Tensor expected, Tensor actual, double rtol, double atol, String where) {
        assertArrayEquals(expected.shape(), actual.shape(), where);
        float[] want = expected.toFloatArray();
        float[] got = actual.toFloatArray();
        double worst = 0;
        int bad = 0;
        for (int i = 0; i < want.length; i++) {
            double diff = Math.abs((double) got[i] - want[i]);
            worst = Math.max(worst, diff);
            if (!(diff <= atol + rtol * Math.abs(want[i]))) {
                bad++;
            }
        }
        assertEquals(0, bad, where + ": " + bad + " values outside rtol " + rtol + " / atol " + atol
                + ", max abs diff " + worst);
    }

    /** Index of the largest value in row {@code row} of a [rows, width] array. */
    private static int argmax(float[] values, int row, int width) {
        int best = 0;
        for (int j = 1; j < width; j++) {
            if (values[row * width + j] > values[row * width + best]) {
                best = j;
            }
        }
        return best;
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2", "gpt2", "bert", "t5"})
    void baseLogitsMatchTransformers(String arch) throws IOException {
        try (BaseModel model = BaseModel.load(modelDir(arch))) {
            assertEquals(arch, model.modelType());
            int compared = 0;
            for (GoldenCase c : cases(arch)) {
                try (NamedTensors io = SafeTensors.read(c.io())) {
                    if (!io.contains("base_logits")) {
                        continue;
                    }
                    // Seq2seq references decode the labels shifted right, which the model derives from labels.
                    boolean seq2seq = c.task().equals("seq2seq-lm");
                    try (Tensor ids = io.get("input_ids");
                            Tensor mask = io.get("attention_mask");
                            Tensor labels = seq2seq ? io.get("labels") : null;
                            Tensor expected = io.get("base_logits");
                            ModelOutput out = model.forward(
                                    ModelInput.builder().inputIds(ids).attentionMask(mask).labels(labels).build())) {
                        assertClose(expected, out.logits(), c.rtol(), c.atol(), c.name());
                        assertEquals(seq2seq, out.hasLoss(), c.name());
                    }
                    compared++;
                }
            }
            assertTrue(compared > 0, "no case of " + arch + " has base_logits");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2", "gpt2", "bert", "t5"})
    void parameterCountIsTheCheckpointsElementCount(String arch) {
        // save_pretrained writes each tied tensor once, as parameterCount() counts it.
        long expected = 0;
        try (NamedTensors weights = SafeTensors.read(modelDir(arch).resolve("model.safetensors"))) {
            for (String name : weights.names()) {
                try (Tensor t = weights.get(name)) {
                    expected += t.numel();
                }
            }
        }
        try (BaseModel model = BaseModel.load(modelDir(arch))) {
            assertEquals(expected, model.parameterCount());
            assertEquals("BaseModel(" + arch + ", " + expected + " parameters)", model.toString());
        }
    }

    @Test
    void causalLossIsTheShiftedCrossEntropy() throws IOException {
        GoldenCase identity = identityCase();
        try (BaseModel model = BaseModel.load(modelDir("llama"));
                NamedTensors io = SafeTensors.read(identity.io());
                Tensor ids = io.get("input_ids");
                Tensor mask = io.get("attention_mask");
                Tensor goldenLabels = io.get("labels");
                Tensor goldenLoss = io.get("loss")) {
            // With the golden labels: transformers' loss for the base model.
            try (Tensor loss = model.loss(ids, mask, goldenLabels)) {
                assertEquals(0, loss.shape().length);
                assertEquals(goldenLoss.toDoubleArray()[0], loss.toDoubleArray()[0], 1e-5);
            }

            long[] shape = ids.shape();
            int batch = (int) shape[0];
            int length = (int) shape[1];
            long[] labels = ids.toLongArray();
            labels[3] = -100;            // ignored positions drop out of the mean
            labels[length + 5] = -100;
            try (Tensor labelTensor = Tensor.of(labels, batch, length);
                    ModelOutput out = model.forward(
                            ModelInput.builder().inputIds(ids).attentionMask(mask).labels(labelTensor).build())) {
                float[] logits = out.logits().toFloatArray();
                int vocab = (int) out.logits().shape()[2];
                // Position t predicts label t + 1; mean of -log softmax over the labels that are not -100.
                double sum = 0;
                int count = 0;
                for (int b = 0; b < batch; b++) {
                    for (int t = 0; t + 1 < length; t++) {
                        long target = labels[b * length + t + 1];
                        if (target == -100) {
                            continue;
                        }
                        int row = (b * length + t) * vocab;
                        double max = Double.NEGATIVE_INFINITY;
                        for (int v = 0; v < vocab; v++) {
                            max = Math.max(max, logits[row + v]);
                        }
                        double expSum = 0;
                        for (int v = 0; v < vocab; v++) {
                            expSum += Math.exp(logits[row + v] - max);
                        }
                        sum -= logits[row + (int) target] - max - Math.log(expSum);
                        count++;
                    }
                }
                assertEquals(batch * (length - 1) - 2, count);
                assertEquals(sum / count, out.loss().toDoubleArray()[0], 1e-5);
                try (Tensor same = model.loss(ids, mask, labelTensor)) {
                    assertEquals(out.loss().toDoubleArray()[0], same.toDoubleArray()[0], 0.0);
                }
            }
        }
    }

    @Test
    void greedyGenerationMatchesTransformers() throws IOException {
        GoldenCase identity = identityCase();
        try (BaseModel model = BaseModel.load(modelDir("llama"));
                NamedTensors io = SafeTensors.read(identity.io());
                Tensor ids = io.get("input_ids");
                Tensor want = io.get("greedy_ids")) {
            int length = (int) ids.shape()[1];
            long[] firstRow = Arrays.copyOf(ids.toLongArray(), length);
            // The reference is transformers' generate() with the model's generation_config.json (eos 2).
            GenerationConfig config = GenerationConfig.builder().maxNewTokens((int) want.shape()[1] - length).build();
            try (Tensor prompt = Tensor.of(firstRow, 1, length);
                    Tensor got = model.generate(prompt, null, config)) {
                assertArrayEquals(want.shape(), got.shape());
                assertArrayEquals(want.toLongArray(), got.toLongArray());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama", "qwen2", "gpt2"})
    void cachedGenerationEqualsRecomputingEveryStep(String arch) throws IOException {
        try (BaseModel model = BaseModel.load(modelDir(arch));
                NamedTensors io = SafeTensors.read(cases(arch).get(0).io());
                Tensor ids = io.get("input_ids")) {
            int batch = (int) ids.shape()[0];
            int length = (int) ids.shape()[1];
            int steps = 8;
            GenerationConfig config = GenerationConfig.builder().maxNewTokens(steps).eosTokenIds().build();
            long[] generated;
            try (Tensor got = model.generate(ids, null, config)) {
                assertArrayEquals(new long[] {batch, length + steps}, got.shape());
                generated = got.toLongArray();
            }
            // Without a cache: a full forward over the sequence so far, then argmax of its last position.
            long[] sequence = ids.toLongArray();
            for (int n = length; n < length + steps; n++) {
                long[] next = new long[batch * (n + 1)];
                try (Tensor input = Tensor.of(sequence, batch, n); Tensor logits = model.forward(input, null)) {
                    int vocab = (int) logits.shape()[2];
                    float[] values = logits.toFloatArray();
                    for (int b = 0; b < batch; b++) {
                        System.arraycopy(sequence, b * n, next, b * (n + 1), n);
                        next[b * (n + 1) + n] = argmax(values, b * n + n - 1, vocab);
                    }
                }
                sequence = next;
            }
            assertArrayEquals(sequence, generated);
        }
    }

    @Test
    void samplingIsReproducibleBySeed() {
        try (BaseModel model = BaseModel.load(modelDir("llama"));
                Tensor prompt = Tensor.of(new long[] {5, 17, 42, 99}, 1, 4)) {
            // A high temperature flattens the tiny model's distribution, so that different seeds diverge.
            GenerationConfig.Builder sampling = GenerationConfig.builder()
                    .maxNewTokens(12).doSample(true).temperature(5.0).topK(0).eosTokenIds();
            long[] first = generate(model, prompt, sampling.seed(7).build());
            assertArrayEquals(first, generate(model, prompt, sampling.seed(7).build()));
            assertFalse(Arrays.equals(first, generate(model, prompt, sampling.seed(8).build())));
            // Top-k 1 leaves one token to draw: greedy search.
            GenerationConfig greedy = GenerationConfig.builder().maxNewTokens(12).eosTokenIds().build();
            assertArrayEquals(generate(model, prompt, greedy), generate(model, prompt, sampling.topK(1).build()));
        }
    }

    private static long[] generate(BaseModel model, Tensor prompt, GenerationConfig config) {
        try (Tensor out = model.generate(prompt, null, config)) {
            return out.toLongArray();
        }
    }

    @Test
    void eosStopsARowAndPadFillsIt() throws IOException {
        try (BaseModel model = BaseModel.load(modelDir("llama"));
                NamedTensors io = SafeTensors.read(cases("llama").get(0).io());
                Tensor ids = io.get("input_ids")) {
            int length = (int) ids.shape()[1];
            long[] free = generate(model, ids, GenerationConfig.builder().maxNewTokens(6).eosTokenIds().build());
            long eos = free[length];  // row 0's first new token
            GenerationConfig stopping = GenerationConfig.builder().maxNewTokens(6).eosTokenIds(eos).padTokenId(0).build();
            try (Tensor out = model.generate(ids, null, stopping)) {
                long[] tokens = out.toLongArray();
                int width = (int) out.shape()[1];
                assertEquals(eos, tokens[length]);
                for (int j = length + 1; j < width; j++) {
                    assertEquals(0, tokens[j], "row 0 after its eos token");
                }
            }
        }
    }

    @Test
    void optionalInputsDefaultAsTransformersDoes() {
        try (BaseModel llama = BaseModel.load(modelDir("llama"));
                Tensor ids = Tensor.of(new int[] {3, 14, 15, 92, 65, 35}, 2, 3);
                Tensor positions = Tensor.of(new long[] {0, 1, 2, 0, 1, 2}, 2, 3);
                Tensor plain = llama.forward(ids, null);
                ModelOutput explicit = llama.forward(ModelInput.builder().inputIds(ids).positionIds(positions).build())) {
            assertClose(plain, explicit.logits(), 0, 0, "explicit position ids");
            assertFalse(explicit.hasLoss());
            PeftException noLoss = assertThrows(PeftException.class, explicit::loss);
            assertEquals(PeftException.Kind.INVALID_ARGUMENT, noLoss.kind());
        }
        try (BaseModel bert = BaseModel.load(modelDir("bert"));
                Tensor ids = Tensor.of(new long[] {3, 14, 15, 92}, 1, 4);
                Tensor types = Tensor.of(new long[] {0, 0, 0, 0}, 1, 4);
                Tensor plain = bert.forward(ids, null);
                ModelOutput typed = bert.forward(ModelInput.builder().inputIds(ids).tokenTypeIds(types).build())) {
            assertArrayEquals(new long[] {1, 3}, plain.shape());  // three labels
            assertClose(plain, typed.logits(), 0, 0, "zero token type ids");
        }
    }

    private static Path copyOfLlama(Path dir) throws IOException {
        for (String file : List.of("config.json", "generation_config.json", "model.safetensors")) {
            Files.copy(modelDir("llama").resolve(file), dir.resolve(file));
        }
        return dir;
    }

    private static void rewriteWeights(Path dir, Consumer<NamedTensors> change) {
        Path file = dir.resolve("model.safetensors");
        try (NamedTensors weights = SafeTensors.read(file)) {
            change.accept(weights);
            SafeTensors.write(file, weights);
        }
    }

    /** The model load fails with the given kind and text, and the JVM and the core keep working. */
    private static void assertLoadFails(Path dir, PeftException.Kind kind, String... texts) {
        PeftException e = assertThrows(PeftException.class, () -> BaseModel.load(dir));
        assertEquals(kind, e.kind(), e.getMessage());
        for (String text : texts) {
            assertTrue(e.getMessage().contains(text), e.getMessage());
        }
        try (BaseModel model = BaseModel.load(modelDir("llama"));
                Tensor ids = Tensor.of(new long[] {1, 2, 3}, 1, 3);
                Tensor logits = model.forward(ids, null)) {
            assertArrayEquals(new long[] {1, 3, 256}, logits.shape());
        }
    }

    @Test
    void missingTensorIsNamed(@TempDir Path tmp) throws IOException {
        Path dir = copyOfLlama(tmp);
        rewriteWeights(dir, weights -> assertTrue(weights.remove("model.norm.weight")));
        assertLoadFails(dir, PeftException.Kind.FORMAT, "missing tensor 'model.norm.weight'", dir.toString());
    }

    @Test
    void wrongShapeIsNamed(@TempDir Path tmp) throws IOException {
        Path dir = copyOfLlama(tmp);
        String name = "model.layers.1.self_attn.q_proj.weight";
        rewriteWeights(dir, weights -> {
            try (Tensor wrong = Tensor.of(new float[3 * 64], 3, 64)) {
                weights.put(name, wrong);
            }
        });
        assertLoadFails(dir, PeftException.Kind.FORMAT, "tensor '" + name + "' has shape [3, 64]", "[64, 64]");
    }

    @Test
    void unsupportedModelTypeIsNamed(@TempDir Path tmp) throws IOException {
        Path dir = copyOfLlama(tmp);
        ObjectNode config = (ObjectNode) JSON.readTree(dir.resolve("config.json").toFile());
        config.put("model_type", "mamba");
        JSON.writeValue(dir.resolve("config.json").toFile(), config);
        assertLoadFails(dir, PeftException.Kind.UNSUPPORTED, "unsupported model_type 'mamba'", "llama");
    }

    @Test
    void missingDirectoryIsNamed(@TempDir Path tmp) {
        Path dir = tmp.resolve("no-such-model");
        PeftException e = assertThrows(PeftException.class, () -> BaseModel.load(dir));
        assertTrue(e.getMessage().contains(dir.toString()), e.getMessage());
    }

    @Test
    void badCallsRaiseTypedErrors() {
        try (BaseModel llama = BaseModel.load(modelDir("llama"));
                Tensor ids = Tensor.of(new long[] {1, 2, 3}, 1, 3);
                Tensor floatIds = Tensor.of(new float[] {1, 2, 3}, 1, 3);
                Tensor shortMask = Tensor.of(new long[] {1, 1}, 1, 2)) {
            Map<String, Runnable> calls = Map.of(
                    "input_ids must be an integer tensor", () -> llama.forward(floatIds, null).close(),
                    "attention_mask must have shape [1, 3]", () -> llama.forward(ids, shortMask).close(),
                    "max_new_tokens must be positive",
                    () -> llama.generate(ids, null, GenerationConfig.builder().maxNewTokens(0).build()).close(),
                    "temperature must be positive", () -> llama.generate(ids, null,
                            GenerationConfig.builder().doSample(true).temperature(0).build()).close(),
                    "labels is required", () -> llama.loss(ids, null, null).close(),
                    "inputIds is required", () -> ModelInput.builder().build());
            calls.forEach((text, call) -> {
                PeftException e = assertThrows(PeftException.class, call::run, text);
                assertTrue(e.getMessage().contains(text), e.getMessage());
            });
            try (Tensor logits = llama.forward(ids, null)) {
                assertNotNull(logits);  // still usable after the failures
            }
        }
        try (BaseModel bert = BaseModel.load(modelDir("bert")); Tensor ids = Tensor.of(new long[] {1, 2}, 1, 2)) {
            PeftException e = assertThrows(PeftException.class,
                    () -> bert.generate(ids, null, GenerationConfig.builder().build()));
            assertEquals(PeftException.Kind.UNSUPPORTED, e.kind());
        }
        BaseModel closed = BaseModel.load(modelDir("gpt2"));
        closed.close();
        PeftException e = assertThrows(PeftException.class, closed::modelType);
        assertTrue(e.getMessage().contains("model is closed"), e.getMessage());
        assertEquals("BaseModel(closed)", closed.toString());
    }
}
