package org.peft4j;

import java.util.Optional;

/**
 * The inputs of one {@link BaseModel#forward(ModelInput)} call, as transformers names them. Only
 * {@code inputIds} is required. Integer tensors of any integer dtype are accepted (the core converts them to
 * int64). A {@code ModelInput} refers to its tensors: {@link #close()} closes them all, which suits the inputs of
 * {@link org.peft4j.text.Tokenizer#encodeBatch}; one built from tensors the caller closes itself need not be closed.
 */
public final class ModelInput implements AutoCloseable {
    private final Tensor inputIds;
    private final Tensor attentionMask;
    private final Tensor tokenTypeIds;
    private final Tensor positionIds;
    private final Tensor labels;
    private final Tensor decoderInputIds;

    private ModelInput(Builder b) {
        inputIds = b.inputIds;
        attentionMask = b.attentionMask;
        tokenTypeIds = b.tokenTypeIds;
        positionIds = b.positionIds;
        labels = b.labels;
        decoderInputIds = b.decoderInputIds;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** Token ids {@code [batch, length]}. */
    public Tensor inputIds() {
        return inputIds;
    }

    /**
     * {@code [batch, length]}: 1 for tokens, 0 for padding (integer, boolean, or floating point holding only 0 and 1,
     * as transformers accepts); absent means all ones.
     */
    public Optional<Tensor> attentionMask() {
        return Optional.ofNullable(attentionMask);
    }

    /** BERT's segment ids {@code [batch, length]}; absent means zeros. */
    public Optional<Tensor> tokenTypeIds() {
        return Optional.ofNullable(tokenTypeIds);
    }

    /** {@code [batch, length]}; absent means derived as transformers does. */
    public Optional<Tensor> positionIds() {
        return Optional.ofNullable(positionIds);
    }

    /**
     * Targets of the loss. Causal LMs: the input ids themselves (shifted inside, -100 ignored); sequence
     * classification: class ids {@code [batch]}; seq2seq: target ids {@code [batch, target length]}.
     */
    public Optional<Tensor> labels() {
        return Optional.ofNullable(labels);
    }

    /** Seq2seq decoder inputs; absent means the labels shifted right, as transformers does. */
    public Optional<Tensor> decoderInputIds() {
        return Optional.ofNullable(decoderInputIds);
    }

    // Every tensor slot, absent ones as null: the call that reads them pins them.
    Tensor[] tensors() {
        return new Tensor[] {inputIds, attentionMask, tokenTypeIds, positionIds, labels, decoderInputIds};
    }

    /** Closes every tensor of this input. */
    @Override
    public void close() {
        for (Tensor tensor : tensors()) {
            if (tensor != null) {
                tensor.close();
            }
        }
    }

    /** Collects the tensors of a {@link ModelInput}; every setter accepts null for "not given". */
    public static final class Builder {
        private Tensor inputIds;
        private Tensor attentionMask;
        private Tensor tokenTypeIds;
        private Tensor positionIds;
        private Tensor labels;
        private Tensor decoderInputIds;

        private Builder() {}

        public Builder inputIds(Tensor inputIds) {
            this.inputIds = inputIds;
            return this;
        }

        public Builder attentionMask(Tensor attentionMask) {
            this.attentionMask = attentionMask;
            return this;
        }

        public Builder tokenTypeIds(Tensor tokenTypeIds) {
            this.tokenTypeIds = tokenTypeIds;
            return this;
        }

        public Builder positionIds(Tensor positionIds) {
            this.positionIds = positionIds;
            return this;
        }

        public Builder labels(Tensor labels) {
            this.labels = labels;
            return this;
        }

        public Builder decoderInputIds(Tensor decoderInputIds) {
            this.decoderInputIds = decoderInputIds;
            return this;
        }

        /** The input; a {@link PeftException} of kind INVALID_ARGUMENT without {@code inputIds}. */
        public ModelInput build() {
            if (inputIds == null) {
                throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "inputIds is required");
            }
            return new ModelInput(this);
        }
    }
}
