package org.peft4j.text;

/** Where {@link Tokenizer#encodeBatch} pads rows shorter than the longest, as transformers' {@code padding_side}. */
public enum PaddingSide {
    /** Padding before the tokens: what generation needs, so that every row's next token follows its last one. */
    LEFT,
    /** Padding after the tokens: transformers' default, for forward passes and training. */
    RIGHT
}
