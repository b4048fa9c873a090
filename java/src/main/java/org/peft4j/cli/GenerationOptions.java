package org.peft4j.cli;

import org.peft4j.GenerationConfig;
import org.peft4j.text.Tokenizer;
import picocli.CommandLine.Option;

/** The generation options shared by generate, eval and demo (transformers' GenerationConfig names). */
final class GenerationOptions {
    @Option(names = "--max-new-tokens", paramLabel = "N", description = "tokens to generate at most (default: ${DEFAULT-VALUE})")
    int maxNewTokens = 32;

    @Option(names = "--do-sample", description = "sample instead of greedy decoding")
    boolean doSample;

    @Option(names = "--temperature", paramLabel = "T", description = "sampling temperature (default: ${DEFAULT-VALUE})")
    double temperature = 1.0;

    @Option(names = "--top-k", paramLabel = "K", description = "sample from the K most likely tokens; 0 = all (default: ${DEFAULT-VALUE})")
    int topK = 50;

    @Option(names = "--top-p", paramLabel = "P", description = "nucleus sampling threshold (default: ${DEFAULT-VALUE})")
    double topP = 1.0;

    @Option(names = "--repetition-penalty", paramLabel = "X", description = "penalty on repeated tokens; 1 = none (default: ${DEFAULT-VALUE})")
    double repetitionPenalty = 1.0;

    @Option(names = "--seed", paramLabel = "S", description = "sampling seed (default: ${DEFAULT-VALUE})")
    long seed = 0;

    GenerationConfig toConfig(Tokenizer tokenizer) {
        GenerationConfig.Builder builder = GenerationConfig.builder().maxNewTokens(maxNewTokens).doSample(doSample)
                .temperature(temperature).topK(topK).topP(topP).repetitionPenalty(repetitionPenalty).seed(seed);
        tokenizer.eosTokenId().ifPresent(builder::eosTokenIds);
        tokenizer.padTokenId().ifPresent(builder::padTokenId);
        return builder.build();
    }
}
