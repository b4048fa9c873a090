package org.peft4j;

/** What {@link BaseModel#forward(ModelInput)} returns: the logits and, when labels were given, the loss. */
public final class ModelOutput implements AutoCloseable {
    private final Tensor logits;
    private final Tensor loss;

    ModelOutput(Tensor logits, Tensor loss) {
        this.logits = logits;
        this.loss = loss;
    }

    /**
     * Causal and seq2seq LMs: {@code [batch, length, vocab]} (seq2seq: the decoder length); sequence
     * classification: {@code [batch, labels]}. Owned by this output: closing it closes the logits.
     */
    public Tensor logits() {
        return logits;
    }

    /** Whether the input had labels, so that {@link #loss()} exists. */
    public boolean hasLoss() {
        return loss != null;
    }

    /**
     * The model's own loss as transformers computes it (a scalar); a {@link PeftException} of kind
     * INVALID_ARGUMENT when the input had no labels. Owned by this output.
     */
    public Tensor loss() {
        if (loss == null) {
            throw new PeftException(PeftException.Kind.INVALID_ARGUMENT, "no loss: the input had no labels");
        }
        return loss;
    }

    /** Closes the logits and the loss. */
    @Override
    public void close() {
        logits.close();
        if (loss != null) {
            loss.close();
        }
    }
}
