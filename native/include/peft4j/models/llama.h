// The Llama family of decoder-only causal LMs, numerically equal to transformers' LlamaForCausalLM,
// Qwen2ForCausalLM and MistralForCausalLM: RMSNorm, rotary position embeddings, grouped-query attention
// (optionally windowed), SwiGLU MLP, LM head optionally tied to the token embedding.
// Module names reproduce HF's state-dict keys ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight").
// Registered as model_type "llama", "qwen2" and "mistral".
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::models {

// Rotary embedding parameters after transformers' standardisation (modeling_rope_utils): "rope_scaling" wins
// over "rope_parameters"; "rope_theta" falls back to the top-level field, then 10000; "type" is the legacy
// name of "rope_type"; llama3's original_max_position_embeddings falls back to the top-level field, then to
// max_position_embeddings.
struct RopeConfig {
  std::string rope_type = "default";  // "default", "linear" or "llama3"
  double rope_theta = 10000.0;
  double factor = 1.0;                // linear, llama3
  double low_freq_factor = 1.0;       // llama3
  double high_freq_factor = 4.0;      // llama3
  int64_t original_max_position_embeddings = 0;  // llama3

  // Other rope types (dynamic, yarn, longrope, ...) and per-layer-type parameters -> Error(Unsupported).
  static RopeConfig from_json(const nlohmann::json& config, int64_t max_position_embeddings);
  // Inverse frequencies [head_dim / 2], f32 on CPU, computed with the same tensor operations as transformers.
  at::Tensor inverse_frequencies(int64_t head_dim) const;
};

struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;   // null -> num_attention_heads
  int64_t head_dim = 128;             // null or absent -> hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool qkv_bias = false;              // llama/mistral: attention_bias; qwen2: always true
  bool o_bias = false;                // llama: attention_bias; qwen2/mistral: false
  bool mlp_bias = false;              // llama: mlp_bias; qwen2/mistral: false
  bool tie_word_embeddings = false;
  double attention_dropout = 0.0;
  std::optional<int64_t> pad_token_id;
  RopeConfig rope;
  // Sliding window of each layer, nullopt = full causal attention. Mistral: config.sliding_window on every
  // layer. Qwen2: only with use_sliding_window, on layers whose layer_types entry is "sliding_attention"
  // (default: layers >= max_window_layers).
  std::vector<std::optional<int64_t>> layer_windows;

  // Reads an HF config.json with the defaults of the model_type's config class; wrong types or inconsistent
  // sizes -> Error(Format) naming the field.
  static LlamaConfig from_json(const nlohmann::json& config);
};

// Root-mean-square layer norm: x / sqrt(mean(x^2) + eps) computed in f32, cast back, times "weight".
// Cloneable so that a tuner can copy it (LN tuning trains a copy per adapter).
class LlamaRMSNormImpl : public torch::nn::Cloneable<LlamaRMSNormImpl>, public TensorModule {
 public:
  LlamaRMSNormImpl(int64_t hidden_size, double eps);
  void reset() override;
  at::Tensor forward(const at::Tensor& input) override;
  at::Tensor weight;

 private:
  int64_t hidden_size_;
  double eps_;
};

// What all layers of one forward share: rotary cos/sin [B or 1, T, head_dim] in the compute dtype, and the
// boolean attention masks [B or 1, 1, T, P + T] (true = attend), one per distinct sliding window.
struct LlamaAttentionContext {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor full_mask;
  std::map<int64_t, at::Tensor> window_masks;
};

// Children "q_proj", "k_proj", "v_proj", "o_proj".
class LlamaAttentionImpl : public torch::nn::Module, public AttentionHooks {
 public:
  LlamaAttentionImpl(const LlamaConfig& config, int64_t layer_index);
  // hidden [B, T, H]; `past` (possibly undefined) holds the rotated keys and values before these T tokens.
  // Returns the attention output [B, T, H]; `present`, when given, receives past + the new keys/values.
  at::Tensor forward(const at::Tensor& hidden, const LlamaAttentionContext& context, const LayerKV& past,
                     LayerKV* present);

  // Query, key and value states of `hidden` with rotary embeddings applied, [B, heads, T, head_dim].
  // Adaption prompts reuse them.
  void project(const at::Tensor& hidden, const LlamaAttentionContext& context, at::Tensor* query, at::Tensor* key,
               at::Tensor* value);
  const std::optional<int64_t>& sliding_window() const { return window_; }

  // A term added to the attention output (after o_proj), computed from the rotated queries [B, heads, T, head_dim]
  // of the same call: PEFT's adaption prompt (AdaptedAttention) adds one. An undefined result adds nothing.
  using OutputTerm = std::function<at::Tensor(LlamaAttentionImpl& attention, const at::Tensor& query)>;
  void set_output_term(OutputTerm term) { output_term_ = std::move(term); }
  // Removes a parameter a tuner registered on this module under PEFT's name (the adaption prompt's).
  void remove_parameter(const std::string& name) { parameters_.erase(name); }

 private:
  int64_t num_heads_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  double dropout_;
  std::optional<int64_t> window_;
  OutputTerm output_term_;
};

// Children "gate_proj", "up_proj", "down_proj": down(act(gate(x)) * up(x)).
class LlamaMLPImpl : public torch::nn::Module, public TensorModule {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& input) override;

 private:
  std::string act_;
};

// Children "self_attn", "mlp", "input_layernorm", "post_attention_layernorm".
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config, int64_t layer_index);
  at::Tensor forward(const at::Tensor& hidden, const LlamaAttentionContext& context, const LayerKV& past,
                     LayerKV* present);
  LlamaAttentionImpl& self_attn() { return *self_attn_; }

 private:
  std::shared_ptr<LlamaAttentionImpl> self_attn_;
};

// The backbone, registered as "model": children "embed_tokens", "layers", "norm".
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  std::vector<std::shared_ptr<LlamaDecoderLayerImpl>> layers;
};

// inputs: input_ids or inputs_embeds [B, T, H]; attention_mask [B, P + T] (1 = attend; left and right padding;
// P = past length, so prefixes are covered by it); position_ids [B or 1, T] (default P .. P + T - 1, as
// transformers' forward, which does not derive them from the mask; generate() does); past_key_values.self_attn:
// per layer [B, kv_heads, P, head_dim] (generation cache or prompt-learning prefixes); labels [B, T] (shifted
// inside, -100 ignored). Without attention_mask and past, position_ids that restart mark packed sequences
// that do not attend to each other, as transformers does. Logits are in the compute dtype, the loss in f32.
class LlamaForCausalLM : public Model {
 public:
  explicit LlamaForCausalLM(const nlohmann::json& config);

  ModelOutput forward(const ModelInputs& inputs) override;
  Task task() const override { return Task::CausalLM; }
  const nlohmann::json& config() const override { return json_; }
  std::string model_type() const override { return config_.model_type; }
  torch::nn::Module& input_embeddings() override;
  at::Tensor embed(const at::Tensor& input_ids) override;
  int64_t num_layers() const override { return config_.num_hidden_layers; }
  int64_t num_kv_heads() const override { return config_.num_key_value_heads; }
  int64_t head_dim() const override { return config_.head_dim; }
  int64_t hidden_size() const override { return config_.hidden_size; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  // A tied lm_head.weight (HF's save_pretrained drops it) and old checkpoints' rotary inv_freq buffers.
  bool is_optional_key(const std::string& key) const override;
  void replicate_layers(const std::vector<std::pair<int64_t, int64_t>>& map) override;

  const LlamaConfig& llama_config() const { return config_; }
  LlamaModelImpl& backbone() { return *model_; }

 private:
  nlohmann::json json_;
  LlamaConfig config_;
  at::Tensor inv_freq_;  // f32 on CPU; not a parameter or buffer, as in HF (non-persistent, never converted)
  std::shared_ptr<LlamaModelImpl> model_;
};

}  // namespace peft4j::models
