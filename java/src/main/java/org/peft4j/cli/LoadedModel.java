package org.peft4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.peft4j.BaseModel;
import org.peft4j.GenerationConfig;
import org.peft4j.PeftException;
import org.peft4j.PeftModel;
import org.peft4j.Tensor;
import org.peft4j.Trainability;
import org.peft4j.text.HfTokenizer;
import org.peft4j.text.Tokenizer;

/**
 * A base model directory with its tokenizer, and optionally an adapter on it: what train, eval, generate and merge
 * start from. Checks before loading weights that the model directory exists and that the tokenizer's ids fit the
 * model's embedding.
 */
final class LoadedModel implements AutoCloseable {
    final Path dir;
    final BaseModel base;
    final Tokenizer tokenizer;
    private PeftModel peft;

    private LoadedModel(Path dir, BaseModel base, Tokenizer tokenizer) {
        this.dir = dir;
        this.base = base;
        this.tokenizer = tokenizer;
    }

    static LoadedModel load(Path modelDir) {
        requireDirectory(modelDir, "model", "an HF model directory (config.json, model.safetensors, tokenizer.json)");
        long modelVocab = vocabSize(modelDir);
        Tokenizer tokenizer = HfTokenizer.load(modelDir);
        try {
            if (tokenizer.vocabSize() > modelVocab) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "the tokenizer of '" + modelDir + "' has "
                        + tokenizer.vocabSize() + " ids but the model's vocab_size is " + modelVocab);
            }
            return new LoadedModel(modelDir, BaseModel.load(modelDir), tokenizer);
        } catch (RuntimeException e) {
            tokenizer.close();
            throw e;
        }
    }

    private static void requireDirectory(Path dir, String what, String expected) {
        if (!Files.exists(dir)) {
            throw new PeftException(PeftException.Kind.NOT_FOUND, what + " directory '" + dir + "' does not exist");
        }
        if (!Files.isDirectory(dir)) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, what + " path '" + dir + "' is a file; expected "
                    + expected);
        }
    }

    private static long vocabSize(Path modelDir) {
        Path config = modelDir.resolve("config.json");
        try {
            JsonNode vocab = new ObjectMapper().readTree(config.toFile()).path("vocab_size");
            if (!vocab.isIntegralNumber()) {
                throw new PeftException(PeftException.Kind.FORMAT, "'" + config + "' has no integer vocab_size");
            }
            return vocab.asLong();
        } catch (IOException e) {
            throw new PeftException(Files.exists(config) ? PeftException.Kind.FORMAT : PeftException.Kind.NOT_FOUND,
                    "cannot read '" + config + "': " + e.getMessage());
        }
    }

    /** Loads a PEFT adapter directory onto the base model. */
    void loadAdapter(Path adapterDir, Trainability trainability) {
        requireDirectory(adapterDir, "adapter", "a PEFT adapter directory (adapter_config.json, "
                + "adapter_model.safetensors)");
        peft = PeftModel.load(base, adapterDir, "default", trainability);
    }

    void attach(PeftModel model) {
        peft = model;
    }

    PeftModel peft() {
        return peft;
    }

    /** The completion greedy (or configured) generation produces after {@code promptIds}, decoded, eos cut off. */
    String complete(long[] promptIds, GenerationConfig config) {
        try (Tensor ids = Tensor.of(promptIds, 1, promptIds.length);
             Tensor out = peft != null ? peft.generate(ids, null, config) : base.generate(ids, null, config)) {
            long[] all = out.toLongArray();
            int end = all.length;
            long eos = tokenizer.eosTokenId().orElse(-1);
            for (int i = promptIds.length; i < all.length; i++) {
                if (all[i] == eos) {
                    end = i;
                    break;
                }
            }
            long[] generated = java.util.Arrays.copyOfRange(all, promptIds.length, end);
            return tokenizer.decode(generated, true);
        }
    }

    /** Loss (mean over the labelled targets) and the number of targets of one example. */
    double[] loss(long[] inputIds, long[] labels) {
        try (Tensor ids = Tensor.of(inputIds, 1, inputIds.length);
             Tensor target = Tensor.of(labels, 1, labels.length);
             Tensor loss = peft != null ? peft.loss(ids, null, target) : base.loss(ids, null, target)) {
            long targets = 0;
            for (int i = 1; i < labels.length; i++) {
                targets += labels[i] != -100 ? 1 : 0;   // the model shifts: position 0 is never a target
            }
            return new double[] {loss.toFloatArray()[0], targets};
        }
    }

    @Override
    public void close() {
        if (peft != null) {
            peft.close();
        }
        base.close();
        tokenizer.close();
    }
}
