// Prompt tuning (Lester et al., 2021) as PEFT 0.21's PromptEmbedding: a trainable table of num_virtual_tokens x
// num_transformer_submodules embeddings ("prompt_encoder.<adapter>.embedding.weight") prepended to the input
// embeddings. prompt_tuning_init: RANDOM (N(0, 1) as torch's Embedding), SAMPLE_VOCAB (rows of the word embedding
// at uniformly drawn token ids) or TEXT (rows at the ids of prompt_tuning_init_text, repeated or cut to the table's
// length). PEFT tokenizes the text itself; here the ids come in "prompt_tuning_init_token_ids" (the Java config
// tokenizes prompt_tuning_init_text with the model's tokenizer.json, or takes the ids).
#pragma once

#include "peft4j/tuners/prompt_learning.h"

namespace peft4j::tuners {

// The token ids TEXT initialisation reads: `text_ids` repeated and cut to `count`, as PEFT does with the tokenizer's
// ids. Error(InvalidArgument) for no ids.
std::vector<int64_t> prompt_init_token_ids(const std::vector<int64_t>& text_ids, int64_t count);

}  // namespace peft4j::tuners
