// BERT for sequence classification, numerically equal to transformers' BertForSequenceClassification.
// Module names reproduce HF's state-dict keys ("bert.encoder.layer.0.attention.self.query.weight",
// "classifier.weight", ...). Registered as model_type "bert".
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::models {

// An elementwise activation named as in transformers' ACT2FN ("gelu", "gelu_new", "relu", "silu", ...).
// Shared by the BERT and T5 families. Unknown or parameterised names (prelu, xielu) -> Error(Unsupported)
// naming `context` (the config field).
using Activation = std::function<at::Tensor(const at::Tensor&)>;
Activation activation_by_name(const std::string& name, const std::string& context);

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double classifier_dropout = 0.1;  // config's classifier_dropout, or hidden_dropout_prob when null
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  int64_t num_labels = 2;           // len(id2label), else num_labels, else 2 (as PreTrainedConfig)
  std::string problem_type;         // "", "regression", "single_label_classification", "multi_label_classification"

  // Reads an HF config.json; wrong types or inconsistent sizes -> Error(Format) naming the field.
  static BertConfig from_json(const nlohmann::json& config);
};

class BertEmbeddingsImpl;
class BertLayerImpl;

// inputs: input_ids or inputs_embeds (raw word embeddings, as `embed` returns), attention_mask [B, P + T] or
// [B, T] (right padding allowed), token_type_ids (default zeros), position_ids (default P .. P + T - 1, as HF
// offsets them by the prefix length), labels ([B] class ids, [B] or [B, 1] floats for regression, [B, N] floats
// for multi-label). past_key_values: per-layer prefixes of the self-attention, [B, heads, P, head_dim], taken
// from `encoder_self_attn` (or from `self_attn` when that is the only one given); prefix positions are always
// attended. use_cache is ignored: BERT is an encoder and returns no cache, as transformers does.
class BertForSequenceClassification : public Model {
 public:
  explicit BertForSequenceClassification(const nlohmann::json& config);

  ModelOutput forward(const ModelInputs& inputs) override;
  Task task() const override { return Task::SequenceClassification; }
  const nlohmann::json& config() const override { return json_; }
  std::string model_type() const override { return "bert"; }
  torch::nn::Module& input_embeddings() override;
  at::Tensor embed(const at::Tensor& input_ids) override;
  int64_t num_layers() const override { return config_.num_hidden_layers; }
  int64_t num_kv_heads() const override { return config_.num_attention_heads; }
  int64_t head_dim() const override { return config_.hidden_size / config_.num_attention_heads; }
  int64_t hidden_size() const override { return config_.hidden_size; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  // The classification head is new when fine-tuning from a pretrained encoder, so "classifier.*" may be absent
  // (it keeps HF's initialisation); pretraining heads ("cls.*") and the old position_ids buffer are ignored.
  bool is_optional_key(const std::string& key) const override;
  void replicate_layers(const std::vector<std::pair<int64_t, int64_t>>& map) override;

  const BertConfig& bert_config() const { return config_; }

 private:
  nlohmann::json json_;
  BertConfig config_;
  std::shared_ptr<BertEmbeddingsImpl> embeddings_;
  std::vector<std::shared_ptr<BertLayerImpl>> layers_;
};

}  // namespace peft4j::models
