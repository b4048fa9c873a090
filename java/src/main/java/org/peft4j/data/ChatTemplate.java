package org.peft4j.data;

/**
 * peft4j's chat template, a plain one that needs no special tokens beyond bos and eos: the tokenizer's bos, then
 * each message as {@code <|role|>\n} followed by its content and {@code \n}, except that an assistant's content
 * ends with the eos token instead. A prompt for generation ends with {@code <|assistant|>\n} (see
 * {@link ExampleEncoder#chatPrompt}). Loss is taken on the assistant contents and their eos only.
 */
public final class ChatTemplate {
    private ChatTemplate() {}

    static String header(String role) {
        return "<|" + role + "|>\n";
    }
}
