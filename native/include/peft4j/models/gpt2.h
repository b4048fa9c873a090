// GPT-2, numerically equal to transformers' GPT2LMHeadModel: learned absolute positions, pre-norm blocks with
// a fused query/key/value projection stored as Conv1D, gelu_new MLP, LM head tied to the token embedding.
// Module names reproduce HF's state-dict keys ("transformer.h.0.attn.c_attn.weight", "lm_head.weight").
// Registered as model_type "gpt2".
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::models {

struct GPT2Config {
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;  // also read as max_position_embeddings
  int64_t n_embd = 768;        // also read as hidden_size
  int64_t n_layer = 12;        // also read as num_hidden_layers
  int64_t n_head = 12;         // also read as num_attention_heads
  int64_t n_inner = 3072;      // null -> 4 * n_embd
  std::string activation_function = "gelu_new";
  double resid_pdrop = 0.1;    // dropouts act in training mode only
  double embd_pdrop = 0.1;
  double attn_pdrop = 0.1;
  double layer_norm_epsilon = 1e-5;
  bool scale_attn_weights = true;               // scores / sqrt(head_dim)
  bool scale_attn_by_inverse_layer_idx = false;  // scores / (layer index + 1)
  // transformers applies it only with its eager attention: scores and softmax in f32. Here attention then runs
  // in f32 and its output is cast back (identical for f32 models).
  bool reorder_and_upcast_attn = false;
  bool tie_word_embeddings = true;

  // Reads an HF config.json with GPT2Config's defaults; wrong types, inconsistent sizes -> Error(Format);
  // add_cross_attention -> Error(Unsupported).
  static GPT2Config from_json(const nlohmann::json& config);
};

// What all blocks of one forward share: the boolean attention mask [B or 1, 1, T, P + T] (true = attend).
struct GPT2AttentionContext {
  at::Tensor mask;
};

// Children "c_attn" (Conv1D, n_embd -> 3 n_embd: queries, keys, values) and "c_proj" (Conv1D).
class GPT2AttentionImpl : public torch::nn::Module, public AttentionHooks {
 public:
  GPT2AttentionImpl(const GPT2Config& config, int64_t layer_index);
  // `past` (possibly undefined) holds the keys/values before these T tokens; `present`, when given, receives
  // past + the new keys/values.
  at::Tensor forward(const at::Tensor& hidden, const GPT2AttentionContext& context, const LayerKV& past,
                     LayerKV* present);

 private:
  int64_t n_embd_;
  int64_t n_head_;
  double scale_;
  double attn_pdrop_;
  double resid_pdrop_;
  bool upcast_;
};

// Children "c_fc" and "c_proj" (Conv1D): c_proj(act(c_fc(x))).
class GPT2MLPImpl : public torch::nn::Module, public TensorModule {
 public:
  explicit GPT2MLPImpl(const GPT2Config& config);
  at::Tensor forward(const at::Tensor& input) override;

 private:
  std::string act_;
  double resid_pdrop_;
};

// Children "ln_1", "attn", "ln_2", "mlp".
class GPT2BlockImpl : public torch::nn::Module {
 public:
  GPT2BlockImpl(const GPT2Config& config, int64_t layer_index);
  at::Tensor forward(const at::Tensor& hidden, const GPT2AttentionContext& context, const LayerKV& past,
                     LayerKV* present);

 private:
  std::shared_ptr<GPT2AttentionImpl> attn_;
};

// The backbone, registered as "transformer": children "wte", "wpe", "h", "ln_f".
class GPT2ModelImpl : public torch::nn::Module {
 public:
  explicit GPT2ModelImpl(const GPT2Config& config);
  std::vector<std::shared_ptr<GPT2BlockImpl>> blocks;
};

// inputs: input_ids or inputs_embeds [B, T, n_embd]; attention_mask [B, P + T] (1 = attend; left and right
// padding; P = past length); position_ids [B or 1, T] (default P .. P + T - 1, as transformers' forward; each
// must be < n_positions); token_type_ids (embedded with wte and added, as transformers does);
// past_key_values.self_attn: per layer [B, n_head, P, head_dim]; labels [B, T] (shifted inside, -100 ignored).
class GPT2LMHeadModel : public Model {
 public:
  explicit GPT2LMHeadModel(const nlohmann::json& config);

  ModelOutput forward(const ModelInputs& inputs) override;
  Task task() const override { return Task::CausalLM; }
  const nlohmann::json& config() const override { return json_; }
  std::string model_type() const override { return "gpt2"; }
  torch::nn::Module& input_embeddings() override;
  at::Tensor embed(const at::Tensor& input_ids) override;
  int64_t num_layers() const override { return config_.n_layer; }
  int64_t num_kv_heads() const override { return config_.n_head; }
  int64_t head_dim() const override { return config_.n_embd / config_.n_head; }
  int64_t hidden_size() const override { return config_.n_embd; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  // A tied lm_head.weight, and the causal-mask buffers ("h.N.attn.bias", "h.N.attn.masked_bias") that old
  // checkpoints carry and transformers ignores.
  bool is_optional_key(const std::string& key) const override;
  std::string base_model_prefix() const override { return "transformer"; }

  const GPT2Config& gpt2_config() const { return config_; }
  GPT2ModelImpl& backbone() { return *transformer_; }

 private:
  nlohmann::json json_;
  GPT2Config config_;
  std::shared_ptr<GPT2ModelImpl> transformer_;
};

}  // namespace peft4j::models
