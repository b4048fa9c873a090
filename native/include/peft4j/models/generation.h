// Text generation with a KV cache, following transformers' generate() for greedy search and sampling.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::models {

// Field names and defaults as transformers' GenerationConfig, except max_new_tokens (transformers defaults to
// max_length = 20 tokens in all).
struct GenerationConfig {
  int64_t max_new_tokens = 20;
  bool do_sample = false;               // false: greedy (argmax), and the three warpers below are not applied
  double temperature = 1.0;             // sampling only; > 0
  int64_t top_k = 50;                   // sampling only; 0 = off
  double top_p = 1.0;                   // sampling only; in (0, 1], 1 = off
  double repetition_penalty = 1.0;      // > 0, 1 = off; applies to prompt and generated tokens, also in greedy
  std::vector<int64_t> eos_token_ids;   // a row stops at any of them; empty = rows never stop early
  std::optional<int64_t> pad_token_id;  // fills finished rows; default the first eos id
  std::optional<int64_t> decoder_start_token_id;  // seq2seq: first decoder token (default from the model config)
  uint64_t seed = 0;                    // sampling draws from a generator seeded with it, never the global one
  bool use_cache = true;                // false recomputes the whole sequence each step (same tokens, slower);
                                        // ignored for a model whose supports_kv_cache() is false

  // eos_token_id (a number or a list), pad_token_id and decoder_start_token_id of an HF config.json or
  // generation_config.json, other fields at their defaults.
  static GenerationConfig from_json(const nlohmann::json& config);
};

// Generates up to max_new_tokens tokens for each row of input_ids [B, T] with attention_mask [B, T] (1 = token,
// 0 = padding; left padding for batches of different lengths; undefined = all ones) and returns them.
//
// Causal LMs: returns [B, T + N], the prompt followed by the N generated tokens. N < max_new_tokens when every
// row has stopped at an eos token earlier; rows that stopped get pad_token_id afterwards. Each step calls
// Model::forward with input_ids (all tokens first, then the last token), attention_mask covering all tokens so
// far, position_ids = cumsum(attention_mask) - 1 (0 at padding) as transformers' generate derives them, and
// past_key_values/use_cache. A model wrapper may rewrite these (prompt learning prepends its prefixes there).
//
// Seq2seq LMs (Task::Seq2SeqLM): returns the decoder sequence [B, 1 + N] starting with decoder_start_token_id.
// The first call passes input_ids, attention_mask (the encoder mask), decoder_input_ids [B, 1] and
// use_cache; the model returns encoder_hidden_states with the logits. Later calls pass encoder_hidden_states
// instead of input_ids, the same attention_mask, the last decoder token as decoder_input_ids and the
// past_key_values (self_attn and cross_attn) the previous call returned. Without use_cache each step passes
// the whole decoder sequence and no past.
//
// Logits processing per step, in transformers' order: repetition penalty, then (sampling only) temperature,
// top-k, top-p; then argmax or a draw from softmax. Draws happen on the CPU from a generator seeded with
// `seed`, so a seed gives the same tokens on every device and run. Runs without gradients.
// Bad options -> Error(InvalidArgument); sequence classification models -> Error(Unsupported).
at::Tensor generate(Model& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config);

}  // namespace peft4j::models
