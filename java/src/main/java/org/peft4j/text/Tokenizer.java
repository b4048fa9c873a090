package org.peft4j.text;

import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.OptionalLong;
import org.peft4j.ModelInput;
import org.peft4j.PeftException;
import org.peft4j.Tensor;

/**
 * Text to token ids and back, as the model's tokenizer does it. Implementations hold native memory: close them.
 */
public interface Tokenizer extends AutoCloseable {
    /** The ids of {@code text}; with {@code addSpecialTokens} the tokenizer's post-processor adds its tokens (a bos). */
    long[] encode(String text, boolean addSpecialTokens);

    /** The text of {@code ids}; with {@code skipSpecialTokens} special tokens (bos, eos, pad) are left out. */
    String decode(long[] ids, boolean skipSpecialTokens);

    /** One more than the largest id the tokenizer can produce. */
    long vocabSize();

    OptionalLong bosTokenId();

    OptionalLong eosTokenId();

    OptionalLong padTokenId();

    /**
     * Encodes {@code texts} as one batch, as transformers' {@code tokenizer(texts, padding=True)} does: input ids
     * {@code [texts, longest]} with shorter rows padded on {@code side} by {@link #padTokenId()} (else
     * {@link #eosTokenId()}, as transformers' generation pads), and the attention mask (1 = token, 0 = padding).
     * Pad on the {@link PaddingSide#LEFT left} for {@code generate}. The input owns both tensors: close it.
     * An empty list, a null text or a text without tokens raises a {@link PeftException} of kind INVALID_ARGUMENT
     * naming it.
     */
    default ModelInput encodeBatch(List<String> texts, boolean addSpecialTokens, PaddingSide side) {
        Objects.requireNonNull(texts, "texts");
        Objects.requireNonNull(side, "side");
        if (texts.isEmpty()) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "texts is empty: a batch needs a text");
        }
        OptionalLong padId = padTokenId().isPresent() ? padTokenId() : eosTokenId();
        long[][] rows = new long[texts.size()][];
        int longest = 0;
        for (int i = 0; i < rows.length; i++) {
            String text = texts.get(i);
            if (text == null) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "texts[" + i + "] is null");
            }
            rows[i] = encode(text, addSpecialTokens);
            if (rows[i].length == 0) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "texts[" + i + "] encodes to no tokens: "
                        + "every row of a batch needs at least one");
            }
            longest = Math.max(longest, rows[i].length);
        }
        if (padId.isEmpty() && Arrays.stream(rows).anyMatch(r -> r.length != rows[0].length)) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "the texts differ in length and the "
                    + "tokenizer has neither pad_token_id nor eos_token_id to pad them with");
        }
        long[] ids = new long[rows.length * longest];
        long[] mask = new long[ids.length];
        for (int i = 0; i < rows.length; i++) {
            int start = i * longest + (side == PaddingSide.LEFT ? longest - rows[i].length : 0);
            Arrays.fill(ids, i * longest, (i + 1) * longest, padId.orElse(0));
            System.arraycopy(rows[i], 0, ids, start, rows[i].length);
            Arrays.fill(mask, start, start + rows[i].length, 1);
        }
        Tensor inputIds = Tensor.of(ids, rows.length, longest);
        try {
            return ModelInput.builder().inputIds(inputIds).attentionMask(Tensor.of(mask, rows.length, longest)).build();
        } catch (RuntimeException e) {
            inputIds.close();
            throw e;
        }
    }

    @Override
    void close();
}
