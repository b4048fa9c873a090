// Activated LoRA (aLoRA, arXiv:2504.12397) as PEFT 0.21's alora_invocation_tokens: the adapter acts only on the
// tokens from the last occurrence of its invocation sequence on, so every token before it sees the base model and
// the base model's KV cache of that context serves the adapter unchanged. A row without the invocation is the base
// model's. Linear and GPT-2 Conv1D layers; it does not merge (no weight expresses "from here on").
//
// Offsets are found in each forward's input_ids (PEFT's calculate_alora_offsets); over a KV cache, a row whose
// invocation an earlier forward found acts on all its new tokens, as PEFT's generate applies the prompt's offsets
// to every decoding step. Without input_ids (inputs_embeds only) the adapter stays off, with PEFT's warning.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace peft4j::tuners {

// PEFT's calculate_alora_offsets for one sequence: the number of trailing tokens from the start of the last
// occurrence of `invocation` in `ids` (a 1-D tensor), or 0 when it does not occur.
int64_t alora_offset(const at::Tensor& ids, const std::vector<int64_t>& invocation);

}  // namespace peft4j::tuners
