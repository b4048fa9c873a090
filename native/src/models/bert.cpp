#include "peft4j/models/bert.h"

#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <limits>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/models/checkpointing.h"
#include "peft4j/models/layer_replication.h"
#include "peft4j/models/config_fields.h"

namespace peft4j::models {

namespace {

void require_positive(int64_t value, const char* key) {
  if (value <= 0) fail(ErrorKind::Format, std::string("bert config field '") + key + "' must be positive, got " +
                                              std::to_string(value));
}

// [B, heads, P, head_dim] prefixes, one per layer, or none. Checked once so that layers see consistent lengths.
const std::vector<LayerKV>* bert_prefixes(const ModelInputs& inputs, int64_t num_layers) {
  if (!inputs.past_key_values) return nullptr;
  const PastKeyValues& past = *inputs.past_key_values;
  if (!past.encoder_self_attn.empty() && !past.self_attn.empty())
    fail(ErrorKind::InvalidArgument,
         "bert past_key_values: give the prefixes in encoder_self_attn or in self_attn, not both");
  const std::vector<LayerKV>& prefixes = past.encoder_self_attn.empty() ? past.self_attn : past.encoder_self_attn;
  if (prefixes.empty()) return nullptr;
  if (!past.cross_attn.empty())
    fail(ErrorKind::InvalidArgument, "bert past_key_values: cross_attn is not used by an encoder-only model");
  if (static_cast<int64_t>(prefixes.size()) != num_layers)
    fail(ErrorKind::InvalidArgument, "bert past_key_values has " + std::to_string(prefixes.size()) +
                                         " layers, the model has " + std::to_string(num_layers));
  int64_t length = prefixes[0].defined() ? prefixes[0].key.size(2) : 0;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const LayerKV& kv = prefixes[i];
    int64_t this_length = kv.defined() ? kv.key.size(2) : 0;
    if (kv.defined() && (!kv.value.defined() || kv.key.dim() != 4 || kv.key.sizes() != kv.value.sizes()))
      fail(ErrorKind::InvalidArgument, "bert past_key_values layer " + std::to_string(i) +
                                           ": key and value must both be [batch, heads, length, head_dim]");
    if (this_length != length)
      fail(ErrorKind::InvalidArgument, "bert past_key_values: layer " + std::to_string(i) + " has prefix length " +
                                           std::to_string(this_length) + ", layer 0 has " + std::to_string(length));
  }
  return &prefixes;
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, double dropout) {
  if (dropout > 0.0) {
    // compat's SDPA has no dropout; training with attention dropout composes the same computation.
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
    if (mask.defined()) scores = scores + mask;
    at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    return at::matmul(at::dropout(probs, dropout, /*train=*/true), v);
  }
  return compat::scaled_dot_product_attention(q, k, v, mask, scale);
}

// The most negative finite value of `type`: transformers' masked-out score (torch.finfo(dtype).min).
at::Scalar lowest_value(at::ScalarType type) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "lowest_value",
                                         [] { return at::Scalar(std::numeric_limits<scalar_t>::lowest()); });
}

at::Tensor gelu_tanh_formula(const at::Tensor& x) {
  return x * 0.5 * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
}

}  // namespace

Activation activation_by_name(const std::string& name, const std::string& context) {
  if (name == "gelu") return [](const at::Tensor& x) { return at::gelu(x); };
  if (name == "gelu_python")
    return [](const at::Tensor& x) { return x * 0.5 * (1.0 + at::erf(x / std::sqrt(2.0))); };
  if (name == "gelu_new" || name == "gelu_accurate" || name == "gelu_python_tanh") return gelu_tanh_formula;
  if (name == "gelu_pytorch_tanh") return [](const at::Tensor& x) { return at::gelu(x, "tanh"); };
  if (name == "gelu_fast")
    return [](const at::Tensor& x) { return x * 0.5 * (1.0 + at::tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))); };
  if (name == "gelu_10") return [](const at::Tensor& x) { return at::clamp(at::gelu(x), -10.0, 10.0); };
  if (name == "quick_gelu") return [](const at::Tensor& x) { return x * at::sigmoid(1.702 * x); };
  if (name == "relu") return [](const at::Tensor& x) { return at::relu(x); };
  if (name == "relu2") return [](const at::Tensor& x) { return at::square(at::relu(x)); };
  if (name == "relu6") return [](const at::Tensor& x) { return at::hardtanh(x, 0.0, 6.0); };
  if (name == "leaky_relu") return [](const at::Tensor& x) { return at::leaky_relu(x, 0.01); };
  if (name == "silu" || name == "swish") return [](const at::Tensor& x) { return at::silu(x); };
  if (name == "mish") return [](const at::Tensor& x) { return at::mish(x); };
  if (name == "hardswish") return [](const at::Tensor& x) { return at::hardswish(x); };
  if (name == "sigmoid") return [](const at::Tensor& x) { return at::sigmoid(x); };
  if (name == "tanh") return [](const at::Tensor& x) { return at::tanh(x); };
  if (name == "linear") return [](const at::Tensor& x) { return x; };
  if (name == "sqrtsoftplus") return [](const at::Tensor& x) { return at::sqrt(at::softplus(x)); };
  if (name == "laplace")
    return [](const at::Tensor& x) { return 0.5 * (1.0 + at::erf((x - 0.707107) / (0.282095 * std::sqrt(2.0)))); };
  fail(ErrorKind::Unsupported, context + ": unsupported activation '" + name + "'");
}

BertConfig BertConfig::from_json(const nlohmann::json& json) {
  if (!json.is_object()) fail(ErrorKind::Format, "bert config is not a JSON object");
  BertConfig c;
  c.vocab_size = config_value<int64_t>(json, "bert", "vocab_size", c.vocab_size);
  c.hidden_size = config_value<int64_t>(json, "bert", "hidden_size", c.hidden_size);
  c.num_hidden_layers = config_value<int64_t>(json, "bert", "num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = config_value<int64_t>(json, "bert", "num_attention_heads", c.num_attention_heads);
  c.intermediate_size = config_value<int64_t>(json, "bert", "intermediate_size", c.intermediate_size);
  c.hidden_act = config_value<std::string>(json, "bert", "hidden_act", c.hidden_act);
  c.hidden_dropout_prob = config_value<double>(json, "bert", "hidden_dropout_prob", c.hidden_dropout_prob);
  c.attention_probs_dropout_prob =
      config_value<double>(json, "bert", "attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  c.classifier_dropout = config_value<double>(json, "bert", "classifier_dropout", c.hidden_dropout_prob);
  c.max_position_embeddings = config_value<int64_t>(json, "bert", "max_position_embeddings", c.max_position_embeddings);
  c.type_vocab_size = config_value<int64_t>(json, "bert", "type_vocab_size", c.type_vocab_size);
  c.layer_norm_eps = config_value<double>(json, "bert", "layer_norm_eps", c.layer_norm_eps);
  c.initializer_range = config_value<double>(json, "bert", "initializer_range", c.initializer_range);
  c.problem_type = config_value<std::string>(json, "bert", "problem_type", "");
  c.num_labels = models::num_labels(json, "bert");
  for (auto [value, key] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                            {c.num_hidden_layers, "num_hidden_layers"}, {c.num_attention_heads, "num_attention_heads"},
                            {c.intermediate_size, "intermediate_size"},
                            {c.max_position_embeddings, "max_position_embeddings"},
                            {c.type_vocab_size, "type_vocab_size"}, {c.num_labels, "num_labels (id2label)"}})
    require_positive(value, key);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(ErrorKind::Format, "bert config: hidden_size " + std::to_string(c.hidden_size) +
                                " is not a multiple of num_attention_heads " + std::to_string(c.num_attention_heads));
  if (!c.problem_type.empty() && c.problem_type != "regression" && c.problem_type != "single_label_classification" &&
      c.problem_type != "multi_label_classification")
    fail(ErrorKind::Format, "bert config field 'problem_type' has unknown value '" + c.problem_type + "'");
  if (c.problem_type == "single_label_classification" && c.num_labels == 1)
    fail(ErrorKind::Format, "bert config: problem_type single_label_classification needs num_labels > 1");
  return c;
}

// embeddings.{word,position,token_type}_embeddings + LayerNorm.
class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& c) : dropout_(c.hidden_dropout_prob) {
    register_module("word_embeddings", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    register_module("position_embeddings", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
    register_module("token_type_embeddings", torch::nn::Embedding(c.type_vocab_size, c.hidden_size));
    register_module("LayerNorm",
                    torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  }

  at::Tensor forward(const at::Tensor& inputs_embeds, const at::Tensor& token_type_ids,
                     const at::Tensor& position_ids) {
    at::Tensor embeddings = inputs_embeds + forward_child(*this, "token_type_embeddings", token_type_ids);
    embeddings = embeddings + forward_child(*this, "position_embeddings", position_ids);
    return at::dropout(forward_child(*this, "LayerNorm", embeddings), dropout_, is_training());
  }

 private:
  double dropout_;
};

// attention.self.{query,key,value}: the projections, and attention over [prefix; sequence].
class BertSelfAttentionImpl : public torch::nn::Module, public AttentionHooks {
 public:
  explicit BertSelfAttentionImpl(const BertConfig& c)
      : AttentionHooks(c.num_attention_heads, c.hidden_size / c.num_attention_heads, true, true),
        heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads),
        dropout_(c.attention_probs_dropout_prob) {
    for (const char* name : {"query", "key", "value"})
      register_module(name, torch::nn::Linear(c.hidden_size, c.hidden_size));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, const LayerKV* prefix) {
    int64_t batch = x.size(0), length = x.size(1);
    auto heads = [&](const at::Tensor& t) { return t.view({batch, length, heads_, head_dim_}).transpose(1, 2); };
    at::Tensor q = heads(forward_child(*this, "query", x)), k = heads(forward_child(*this, "key", x)),
               v = heads(forward_child(*this, "value", x));
    if (prefix && prefix->defined()) {
      const LayerKV kv = adapt_past(*prefix, x);
      k = at::cat({kv.key.to(k.scalar_type()), k}, 2);
      v = at::cat({kv.value.to(v.scalar_type()), v}, 2);
    }
    at::Tensor out = attention(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)),
                               is_training() ? dropout_ : 0.0);
    return add_heads_terms(out.transpose(1, 2).reshape({batch, length, heads_ * head_dim_}), x);
  }

 private:
  int64_t heads_, head_dim_;
  double dropout_;
};

// A post-LN residual block output: LayerNorm(dropout(dense(x)) + residual). HF's BertSelfOutput and BertOutput.
class BertResidualOutputImpl : public torch::nn::Module {
 public:
  BertResidualOutputImpl(int64_t in, const BertConfig& c) : dropout_(c.hidden_dropout_prob) {
    register_module("dense", torch::nn::Linear(in, c.hidden_size));
    register_module("LayerNorm",
                    torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual) {
    return forward_child(*this, "LayerNorm",
                         at::dropout(forward_child(*this, "dense", x), dropout_, is_training()) + residual);
  }

 private:
  double dropout_;
};

class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const BertConfig& c) {
    self = register_module("self", std::make_shared<BertSelfAttentionImpl>(c));
    output = register_module("output", std::make_shared<BertResidualOutputImpl>(c.hidden_size, c));
  }
  std::shared_ptr<BertSelfAttentionImpl> self;
  std::shared_ptr<BertResidualOutputImpl> output;
};

class BertIntermediateImpl : public torch::nn::Module {
 public:
  explicit BertIntermediateImpl(const BertConfig& c) : act_(activation_by_name(c.hidden_act, "bert hidden_act")) {
    register_module("dense", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  }
  at::Tensor forward(const at::Tensor& x) { return act_(forward_child(*this, "dense", x)); }

 private:
  Activation act_;
};

// encoder.layer.N: attention, intermediate, output.
class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertConfig& c) {
    attention = register_module("attention", std::make_shared<BertAttentionImpl>(c));
    intermediate = register_module("intermediate", std::make_shared<BertIntermediateImpl>(c));
    output = register_module("output", std::make_shared<BertResidualOutputImpl>(c.intermediate_size, c));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, const LayerKV* prefix) {
    at::Tensor attended = attention->output->forward(attention->self->forward(x, mask, prefix), x);
    return output->forward(intermediate->forward(attended), attended);
  }

  std::shared_ptr<BertAttentionImpl> attention;
  std::shared_ptr<BertIntermediateImpl> intermediate;
  std::shared_ptr<BertResidualOutputImpl> output;
};

// HF's BertPooler: tanh(dense(first token)). A cloneable one-tensor module, so that modules_to_save can train a
// copy of it as PEFT can.
class BertPoolerImpl : public torch::nn::Cloneable<BertPoolerImpl>, public TensorModule {
 public:
  explicit BertPoolerImpl(int64_t hidden_size) : hidden_size_(hidden_size) { reset(); }
  void reset() override { register_module("dense", torch::nn::Linear(hidden_size_, hidden_size_)); }
  at::Tensor forward(const at::Tensor& hidden) override {
    return at::tanh(forward_child(*this, "dense", hidden.select(1, 0)));
  }

 private:
  int64_t hidden_size_;
};

BertForSequenceClassification::BertForSequenceClassification(const nlohmann::json& config)
    : json_(config), config_(BertConfig::from_json(config)) {
  auto bert = register_module("bert", std::make_shared<torch::nn::Module>());
  embeddings_ = bert->register_module("embeddings", std::make_shared<BertEmbeddingsImpl>(config_));
  auto encoder = bert->register_module("encoder", std::make_shared<torch::nn::Module>());
  auto layer_list = encoder->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<BertLayerImpl>(config_));
    layer_list->push_back(layers_.back());
  }
  bert->register_module("pooler", std::make_shared<BertPoolerImpl>(config_.hidden_size));
  auto classifier = register_module("classifier", torch::nn::Linear(config_.hidden_size, config_.num_labels));
  // HF's initialisation of a new head: normal(0, initializer_range) weights, zero bias.
  at::NoGradGuard no_grad;
  classifier->weight.normal_(0.0, config_.initializer_range);
  classifier->bias.zero_();
}

void BertForSequenceClassification::replicate_layers(const std::vector<std::pair<int64_t, int64_t>>& map) {
  const std::vector<int64_t> sources = replicated_layer_sources(map, config_.num_hidden_layers);
  std::vector<std::shared_ptr<BertLayerImpl>> layers;
  torch::nn::ModuleList list;
  std::vector<bool> used(layers_.size(), false);
  for (int64_t i : sources) {
    // The first use of a layer keeps the module itself; a repeat is a new one sharing its weights.
    std::shared_ptr<BertLayerImpl> layer = layers_[i];
    if (used[i]) {
      layer = std::make_shared<BertLayerImpl>(config_);
      layer->to(layers_[i]->parameters().front().device());
      share_weights(*layer, *layers_[i]);
      if (!layers_[i]->is_training()) layer->eval();
    }
    used[i] = true;
    layers.push_back(layer);
    list->push_back(layer);
  }
  layers_ = layers;
  auto bert = named_children()["bert"];
  bert->named_children()["encoder"]->replace_module("layer", list.ptr());
  config_.num_hidden_layers = static_cast<int64_t>(layers.size());
  json_["num_hidden_layers"] = config_.num_hidden_layers;
}

torch::nn::Module& BertForSequenceClassification::input_embeddings() {
  return *embeddings_->named_children()["word_embeddings"];
}

at::Tensor BertForSequenceClassification::embed(const at::Tensor& input_ids) {
  return forward_child(*embeddings_, "word_embeddings", input_ids);
}

bool BertForSequenceClassification::is_optional_key(const std::string& key) const {
  return key == "classifier.weight" || key == "classifier.bias" || key.rfind("cls.", 0) == 0 ||
         key == "bert.embeddings.position_ids";
}

ModelOutput BertForSequenceClassification::forward(const ModelInputs& in) {
  if (in.input_ids.defined() == in.inputs_embeds.defined())
    fail(ErrorKind::InvalidArgument, "bert forward: give exactly one of input_ids and inputs_embeds");
  at::Tensor embeds = in.input_ids.defined() ? embed(in.input_ids) : in.inputs_embeds;
  if (embeds.dim() != 3 || embeds.size(2) != config_.hidden_size)
    fail(ErrorKind::InvalidArgument, "bert forward: inputs_embeds must be [batch, length, " +
                                         std::to_string(config_.hidden_size) + "]");
  const int64_t batch = embeds.size(0), length = embeds.size(1);
  const at::Device device = embeds.device();
  const std::vector<LayerKV>* prefixes = bert_prefixes(in, config_.num_hidden_layers);
  const int64_t prefix_length = prefixes && (*prefixes)[0].defined() ? (*prefixes)[0].key.size(2) : 0;

  at::Tensor position_ids = in.position_ids;
  if (!position_ids.defined()) {
    if (prefix_length + length > config_.max_position_embeddings)
      fail(ErrorKind::InvalidArgument, "bert forward: " + std::to_string(prefix_length + length) +
                                           " positions exceed max_position_embeddings " +
                                           std::to_string(config_.max_position_embeddings));
    position_ids = at::arange(prefix_length, prefix_length + length, at::TensorOptions(at::kLong).device(device))
                       .unsqueeze(0);
  }
  at::Tensor token_type_ids = in.token_type_ids.defined()
                                  ? in.token_type_ids
                                  : at::zeros({batch, length}, at::TensorOptions(at::kLong).device(device));
  at::Tensor hidden = embeddings_->forward(embeds, token_type_ids, position_ids);

  // Additive mask over [prefix; sequence] keys: 0 where attended, the dtype's lowest where padded.
  at::Tensor mask;
  if (in.attention_mask.defined()) {
    at::Tensor keep = in.attention_mask.to(device) != 0;
    if (keep.dim() != 2 || keep.size(0) != batch ||
        (keep.size(1) != length && keep.size(1) != prefix_length + length))
      fail(ErrorKind::InvalidArgument, "bert forward: attention_mask must be [" + std::to_string(batch) + ", " +
                                           std::to_string(length) + "] or [" + std::to_string(batch) + ", " +
                                           std::to_string(prefix_length + length) + "] (prefix included)");
    if (keep.size(1) == length && prefix_length > 0)
      keep = at::cat({at::ones({batch, prefix_length}, keep.options()), keep}, 1);
    mask = at::zeros(keep.sizes(), hidden.options())
               .masked_fill(keep.logical_not(), lowest_value(hidden.scalar_type()))
               .view({batch, 1, 1, keep.size(1)});
  }

  for (size_t i = 0; i < layers_.size(); ++i) {
    auto layer = layers_[i];
    if (prefixes) {  // prefixes pass through plainly (a checkpoint carries only the hidden state)
      hidden = layer->forward(hidden, mask, &(*prefixes)[i]);
    } else {
      hidden = run_layer([layer, mask](const at::Tensor& h) { return layer->forward(h, mask, nullptr); }, hidden);
    }
  }

  at::Tensor pooled = forward_child(*named_children()["bert"], "pooler", hidden);
  ModelOutput out;
  out.logits = forward_child(*this, "classifier", at::dropout(pooled, config_.classifier_dropout, is_training()));

  if (in.labels.defined()) {
    at::Tensor labels = in.labels.to(device);
    std::string problem = config_.problem_type;
    if (problem.empty()) {
      if (config_.num_labels == 1)
        problem = "regression";
      else if (labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt)
        problem = "single_label_classification";
      else
        problem = "multi_label_classification";
    }
    at::Tensor logits = out.logits.to(at::kFloat);
    if (problem == "regression") {
      at::Tensor target = labels.to(at::kFloat);
      out.loss = config_.num_labels == 1 ? at::mse_loss(logits.squeeze(), target.squeeze())
                                         : at::mse_loss(logits, target);
    } else if (problem == "single_label_classification") {
      out.loss = at::cross_entropy_loss(logits.view({-1, config_.num_labels}), labels.view({-1}).to(at::kLong));
    } else {
      out.loss = at::binary_cross_entropy_with_logits(logits, labels.to(at::kFloat));
    }
  }
  return out;
}

namespace {
const bool registered = register_model_type(
    "bert", [](const nlohmann::json& config) { return std::make_shared<BertForSequenceClassification>(config); });
}  // namespace

}  // namespace peft4j::models
