// Prefix tuning (Li & Liang, 2021) as PEFT 0.21's PrefixEncoder and get_prompt: num_virtual_tokens trainable keys and
// values for every attention layer, fed to the model as past keys/values. Without prefix_projection the table
// "embedding" [num_virtual_tokens, num_layers * 2 * token_dim] holds them directly; with it, "embedding"
// [num_virtual_tokens, token_dim] goes through "transform", Linear(token_dim, encoder_hidden_size) Tanh
// Linear(encoder_hidden_size, num_layers * 2 * token_dim). Row block 2i (keys) and 2i + 1 (values) of each virtual
// token, split into num_attention_heads heads, is layer i's prefix. Decoder-only models take them in their
// self-attention (position ids shifted by num_virtual_tokens), BERT in its encoder self-attention (positions
// counted after the prefix), T5 in the decoder self-attention only, layer j taking block (4j mod 2L) as PEFT's
// EncoderDecoderCache assignment does. Models with grouped-query attention get num_key_value_heads heads.
#pragma once

#include "peft4j/tuners/prompt_learning.h"

namespace peft4j::tuners {

// Per-layer prefixes [batch, heads, num_virtual_tokens, head_dim] from the virtual tokens' table.
std::vector<models::LayerKV> prefix_layers(const at::Tensor& table, const nlohmann::json& config, int64_t batch,
                                           int64_t model_layers, bool seq2seq);

}  // namespace peft4j::tuners
