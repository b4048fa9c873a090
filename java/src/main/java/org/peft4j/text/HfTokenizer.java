package org.peft4j.text;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import java.util.OptionalLong;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;
import org.peft4j.PeftException;

/**
 * A HuggingFace {@code tokenizer.json} run by the {@code tokenizers} Rust library (through DJL, whose jar bundles it).
 * The special token ids come from the model directory's {@code config.json} ({@code bos_token_id},
 * {@code eos_token_id}, {@code pad_token_id}), as transformers reads them.
 *
 * <p>Threads may share one tokenizer. {@link #close()} waits for the calls in flight; later calls throw a
 * {@link PeftException} of kind CLOSED.
 */
public final class HfTokenizer implements Tokenizer {
    static {
        // DJL reads these before it loads its library: without them it checks the network for updates at start-up,
        // reports usage, and on a machine with a GPU looks for (and downloads) a CUDA build instead of the bundled one.
        setUnlessGiven("ai.djl.offline", "true");
        setUnlessGiven("OPT_OUT_TRACKING", "true");
        setUnlessGiven("RUST_FLAVOR", "cpu");
        // SLF4J's simple logger reads a logger's level when the logger is made: DJL's library loading says INFO
        // lines on the first load ("Found matching platform..."); keep them to warnings unless configured.
        setUnlessGiven("org.slf4j.simpleLogger.log.ai.djl", "warn");
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final HuggingFaceTokenizer tokenizer;
    private final long vocabSize;
    private final OptionalLong bos;
    private final OptionalLong eos;
    private final OptionalLong pad;
    // Encoding and decoding hold the read lock; close() takes the write lock, so it never frees the native tokenizer
    // under a call in flight.
    private final ReentrantReadWriteLock lifetime = new ReentrantReadWriteLock();
    private boolean closed;

    private HfTokenizer(HuggingFaceTokenizer tokenizer, long vocabSize, JsonNode modelConfig) {
        this.tokenizer = tokenizer;
        this.vocabSize = vocabSize;
        this.bos = idOf(modelConfig, "bos_token_id");
        this.eos = idOf(modelConfig, "eos_token_id");
        this.pad = idOf(modelConfig, "pad_token_id");
    }

    private static void setUnlessGiven(String key, String value) {
        if (System.getProperty(key) == null && System.getenv(key) == null) {
            System.setProperty(key, value);
        }
    }

    /** The tokenizer of an HF model directory: its {@code tokenizer.json} and the special ids of its config.json. */
    public static HfTokenizer load(Path modelDir) {
        Path file = modelDir.resolve("tokenizer.json");
        if (!Files.isRegularFile(file)) {
            throw new PeftException(PeftException.Kind.NOT_FOUND, "no tokenizer.json in '" + modelDir + "'");
        }
        JsonNode config = readJson(modelDir.resolve("config.json"));
        long vocab = vocabSizeOf(readJson(file), file);
        try {
            // Encoding adds the post-processor's special tokens only when asked; no padding or truncation here.
            HuggingFaceTokenizer hf = HuggingFaceTokenizer.newInstance(file,
                    Map.of("addSpecialTokens", "false", "padding", "false", "truncation", "false"));
            return new HfTokenizer(hf, vocab, config);
        } catch (IOException | RuntimeException e) {
            throw new PeftException(PeftException.Kind.FORMAT, "cannot load tokenizer '" + file + "': " + e.getMessage());
        }
    }

    private static JsonNode readJson(Path file) {
        try {
            return JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new PeftException(Files.exists(file) ? PeftException.Kind.FORMAT : PeftException.Kind.NOT_FOUND,
                    "cannot read '" + file + "': " + e.getMessage());
        }
    }

    // The model's vocabulary and the added tokens share one id space; the largest id bounds it.
    private static long vocabSizeOf(JsonNode tokenizerJson, Path file) {
        long max = -1;
        for (JsonNode id : tokenizerJson.path("model").path("vocab")) {
            max = Math.max(max, id.asLong());
        }
        for (JsonNode token : tokenizerJson.path("added_tokens")) {
            max = Math.max(max, token.path("id").asLong());
        }
        if (max < 0) {
            throw new PeftException(PeftException.Kind.FORMAT, "tokenizer '" + file + "' has no vocabulary");
        }
        return max + 1;
    }

    private static OptionalLong idOf(JsonNode config, String field) {
        JsonNode node = config.path(field);
        if (node.isArray() && node.size() > 0) {
            node = node.get(0);
        }
        return node.isIntegralNumber() ? OptionalLong.of(node.asLong()) : OptionalLong.empty();
    }

    @Override
    public long[] encode(String text, boolean addSpecialTokens) {
        Objects.requireNonNull(text, "text");
        return open(() -> tokenizer.encode(text, addSpecialTokens, false).getIds());
    }

    @Override
    public String decode(long[] ids, boolean skipSpecialTokens) {
        Objects.requireNonNull(ids, "ids");
        return open(() -> tokenizer.decode(ids, skipSpecialTokens));
    }

    private <T> T open(Supplier<T> body) {
        lifetime.readLock().lock();
        try {
            if (closed) {
                throw new PeftException(PeftException.Kind.CLOSED, "tokenizer is closed");
            }
            return body.get();
        } finally {
            lifetime.readLock().unlock();
        }
    }

    @Override
    public long vocabSize() {
        return vocabSize;
    }

    @Override
    public OptionalLong bosTokenId() {
        return bos;
    }

    @Override
    public OptionalLong eosTokenId() {
        return eos;
    }

    @Override
    public OptionalLong padTokenId() {
        return pad;
    }

    @Override
    public void close() {
        lifetime.writeLock().lock();
        try {
            if (!closed) {
                closed = true;
                tokenizer.close();
            }
        } finally {
            lifetime.writeLock().unlock();
        }
    }
}
