package org.peft4j;

import java.util.Objects;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * Options of {@link BaseModel#generate}: the fields of transformers' {@code GenerationConfig} that peft4j
 * implements, with its defaults, except {@code maxNewTokens} (20 new tokens). Greedy search unless
 * {@link Builder#doSample(boolean) doSample} is set; temperature, top-k and top-p apply only when sampling. The
 * eos and pad token ids default to the model's own (its {@code generation_config.json}, else
 * {@code config.json}). The core validates the values when generating. Immutable; build one with
 * {@link #builder()}.
 */
public final class GenerationConfig {
    private final int maxNewTokens;
    private final boolean doSample;
    private final double temperature;
    private final int topK;
    private final double topP;
    private final double repetitionPenalty;
    private final long[] eosTokenIds;
    private final Long padTokenId;
    private final long seed;

    private GenerationConfig(Builder b) {
        maxNewTokens = b.maxNewTokens;
        doSample = b.doSample;
        temperature = b.temperature;
        topK = b.topK;
        topP = b.topP;
        repetitionPenalty = b.repetitionPenalty;
        eosTokenIds = b.eosTokenIds;
        padTokenId = b.padTokenId;
        seed = b.seed;
    }

    /** A builder holding the defaults. */
    public static Builder builder() {
        return new Builder();
    }

    /** Upper bound on the tokens generated per row; fewer when every row stopped at an eos token. */
    public int maxNewTokens() {
        return maxNewTokens;
    }

    /** Whether tokens are drawn from the processed distribution (true) or taken by argmax (false). */
    public boolean doSample() {
        return doSample;
    }

    /** Divides the logits before sampling; greater than 0. */
    public double temperature() {
        return temperature;
    }

    /** Sampling keeps the k most likely tokens; 0 keeps all. */
    public int topK() {
        return topK;
    }

    /** Sampling keeps the smallest set of most likely tokens whose probability reaches p; 1 keeps all. */
    public double topP() {
        return topP;
    }

    /** Penalty on tokens already in the row (prompt included), also in greedy search; 1 is none. */
    public double repetitionPenalty() {
        return repetitionPenalty;
    }

    /** The ids at which a row stops (a copy), or empty when the model's own apply. */
    public Optional<long[]> eosTokenIds() {
        return Optional.ofNullable(eosTokenIds).map(long[]::clone);
    }

    /** The id that fills rows after they stopped, or empty for the model's own (else the first eos id). */
    public OptionalLong padTokenId() {
        return padTokenId == null ? OptionalLong.empty() : OptionalLong.of(padTokenId);
    }

    /** Seed of the generator that sampling draws from: the same seed gives the same tokens. */
    public long seed() {
        return seed;
    }

    /** Collects the options of a {@link GenerationConfig}. */
    public static final class Builder {
        private int maxNewTokens = 20;
        private boolean doSample = false;
        private double temperature = 1.0;
        private int topK = 50;
        private double topP = 1.0;
        private double repetitionPenalty = 1.0;
        private long[] eosTokenIds;
        private Long padTokenId;
        private long seed = 0;

        private Builder() {}

        public Builder maxNewTokens(int maxNewTokens) {
            this.maxNewTokens = maxNewTokens;
            return this;
        }

        public Builder doSample(boolean doSample) {
            this.doSample = doSample;
            return this;
        }

        public Builder temperature(double temperature) {
            this.temperature = temperature;
            return this;
        }

        public Builder topK(int topK) {
            this.topK = topK;
            return this;
        }

        public Builder topP(double topP) {
            this.topP = topP;
            return this;
        }

        public Builder repetitionPenalty(double repetitionPenalty) {
            this.repetitionPenalty = repetitionPenalty;
            return this;
        }

        /** Replaces the model's eos token ids; no ids means that rows never stop early. */
        public Builder eosTokenIds(long... eosTokenIds) {
            this.eosTokenIds = Objects.requireNonNull(eosTokenIds, "eosTokenIds").clone();
            return this;
        }

        /** Replaces the model's pad token id. */
        public Builder padTokenId(long padTokenId) {
            this.padTokenId = padTokenId;
            return this;
        }

        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        public GenerationConfig build() {
            return new GenerationConfig(this);
        }
    }
}
