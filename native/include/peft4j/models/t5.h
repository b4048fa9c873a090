// T5 for conditional generation, numerically equal to transformers' T5ForConditionalGeneration (5.17).
// Module names reproduce HF's state-dict keys ("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
// "decoder.block.0.layer.1.EncDecAttention.k.weight", ...). Registered as model_type "t5".
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "peft4j/models/model.h"

namespace peft4j::models {

struct T5Config {
  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  int64_t num_decoder_layers = 6;   // num_layers when absent or null
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double dropout_rate = 0.1;
  double layer_norm_epsilon = 1e-6;
  std::string dense_act_fn = "relu";  // from feed_forward_proj ("gated-gelu" -> gelu_new) unless given
  bool is_gated_act = false;          // feed_forward_proj "gated-*": wi_0/wi_1 instead of wi
  int64_t pad_token_id = 0;
  std::optional<int64_t> decoder_start_token_id;
  // transformers 5.17 reads "scale_decoder_outputs" when present, else derives it from tie_word_embeddings != false:
  // original T5 rescales the decoder output by d_model^-0.5 before lm_head, T5 v1.1 does not.
  bool scale_decoder_outputs = true;
  // lm_head shares "shared.weight". transformers 5.17 always declares the tie and keeps lm_head separate only when a
  // checkpoint holds a different lm_head.weight; without the checkpoint at hand this follows the config: untied when
  // tie_word_embeddings is false (T5 v1.1, flan-t5 configs) or scale_decoder_outputs is false (their 5.x re-saves).
  bool tie_lm_head = true;

  // Reads an HF config.json; wrong types or inconsistent sizes -> Error(Format) naming the field.
  static T5Config from_json(const nlohmann::json& config);
};

class T5StackImpl;

// inputs:
//  - encoder: input_ids or inputs_embeds, attention_mask [B, T_enc] (padding anywhere), or encoder_hidden_states
//    (a previous output's) to skip encoding; attention_mask then still masks the encoder positions.
//  - decoder: decoder_input_ids or decoder_inputs_embeds, else labels shifted right (decoder_start_token_id first,
//    -100 replaced by pad_token_id); decoder_attention_mask [B, P + T] or [B, T] (past positions attended).
//  - labels: [B, T] target ids, -100 ignored, cross-entropy loss averaged over the others.
//  - past_key_values, each [B, heads, length, d_kv] per layer:
//      self_attn[i]: decoder self-attention keys/values before the current tokens (generation cache or a prefix).
//        The current tokens take positions P .. P + T - 1 for the relative bias and attend causally after it.
//      cross_attn[i]: when defined, the cross-attention keys/values (generation cache); else projected from the
//        encoder output.
//      encoder_self_attn[i]: a prefix of the encoder self-attention, always attended, before the tokens' positions.
//    transformers 5.17 with PEFT's prefix tuning only reaches the decoder self-attention: the encoder stack drops
//    the cache and PEFT empties the cross-attention part; a prefix tuner that wants HF's numbers fills self_attn only.
//  - use_cache: output.past_key_values holds self_attn (past + current) and cross_attn for the next step.
// output.encoder_hidden_states is the encoder output, for later decoding steps.
class T5ForConditionalGeneration : public Model {
 public:
  explicit T5ForConditionalGeneration(const nlohmann::json& config);

  ModelOutput forward(const ModelInputs& inputs) override;
  Task task() const override { return Task::Seq2SeqLM; }
  const nlohmann::json& config() const override { return json_; }
  std::string model_type() const override { return "t5"; }
  torch::nn::Module& input_embeddings() override { return *named_children()["shared"]; }
  at::Tensor embed(const at::Tensor& input_ids) override { return forward_child(*this, "shared", input_ids); }
  // Encoder layers (PEFT's num_layers for T5); the decoder has t5_config().num_decoder_layers.
  int64_t num_layers() const override { return config_.num_layers; }
  int64_t num_kv_heads() const override { return config_.num_heads; }
  int64_t head_dim() const override { return config_.d_kv; }
  int64_t hidden_size() const override { return config_.d_model; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  bool is_optional_key(const std::string& key) const override;
  void on_absent_optional_keys(const std::vector<std::string>& keys) override;

  const T5Config& t5_config() const { return config_; }
  // labels shifted right: decoder_start_token_id first, -100 replaced by pad_token_id (HF's _shift_right).
  at::Tensor shift_right(const at::Tensor& labels) const;
  // Runs the encoder only: [B, T, d_model].
  at::Tensor encode(const at::Tensor& input_ids, const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                    const std::vector<LayerKV>* prefixes = nullptr);

 private:
  nlohmann::json json_;
  T5Config config_;
  std::shared_ptr<T5StackImpl> encoder_;
  std::shared_ptr<T5StackImpl> decoder_;
};

}  // namespace peft4j::models
