package org.peft4j.text;

import java.util.OptionalLong;

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

    @Override
    void close();
}
