#include "peft4j/models/gpt2.h"

#include <algorithm>
#include <cmath>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/models/checkpointing.h"
#include "peft4j/models/conv1d.h"

namespace peft4j::models {

namespace {

using nlohmann::json;

// The value of the first of `names` present and non-null (GPT-2's own names, then the attribute_map aliases).
const json* field(const json& config, std::initializer_list<const char*> names, std::string* found) {
  for (const char* name : names) {
    auto it = config.find(name);
    if (it != config.end() && !it->is_null()) {
      *found = name;
      return &*it;
    }
  }
  return nullptr;
}

int64_t int_field(const json& config, std::initializer_list<const char*> names, int64_t fallback) {
  std::string name;
  const json* value = field(config, names, &name);
  if (!value) return fallback;
  if (!value->is_number_integer())
    fail(ErrorKind::Format, "gpt2 config field '" + name + "' must be an integer, got " + value->dump());
  int64_t result = value->get<int64_t>();
  if (result <= 0)
    fail(ErrorKind::Format, "gpt2 config field '" + name + "' must be positive, got " + std::to_string(result));
  return result;
}

double number_field(const json& config, const char* name, double fallback) {
  std::string found;
  const json* value = field(config, {name}, &found);
  if (!value) return fallback;
  if (!value->is_number())
    fail(ErrorKind::Format, "gpt2 config field '" + found + "' must be a number, got " + value->dump());
  return value->get<double>();
}

bool bool_field(const json& config, const char* name, bool fallback) {
  std::string found;
  const json* value = field(config, {name}, &found);
  if (!value) return fallback;
  if (!value->is_boolean())
    fail(ErrorKind::Format, "gpt2 config field '" + found + "' must be true or false, got " + value->dump());
  return value->get<bool>();
}

// transformers' ACT2FN entries that GPT-2 checkpoints use.
at::Tensor activate(const std::string& name, const at::Tensor& x) {
  if (name == "gelu_new")  // NewGELUActivation's formula, operation for operation
    return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  if (name == "silu" || name == "swish") return at::silu(x);
  fail(ErrorKind::Internal, "unchecked activation '" + name + "'");
}

at::Tensor maybe_dropout(const at::Tensor& x, double p, bool training) {
  return training && p > 0.0 ? at::dropout(x, p, /*train=*/true) : x;
}

}  // namespace

GPT2Config GPT2Config::from_json(const json& config) {
  if (!config.is_object()) fail(ErrorKind::Format, "model config is not a JSON object");
  GPT2Config c;
  c.vocab_size = int_field(config, {"vocab_size"}, c.vocab_size);
  c.n_positions = int_field(config, {"n_positions", "max_position_embeddings"}, c.n_positions);
  c.n_embd = int_field(config, {"n_embd", "hidden_size"}, c.n_embd);
  c.n_layer = int_field(config, {"n_layer", "num_hidden_layers"}, c.n_layer);
  c.n_head = int_field(config, {"n_head", "num_attention_heads"}, c.n_head);
  c.n_inner = int_field(config, {"n_inner"}, 4 * c.n_embd);
  if (c.n_embd % c.n_head != 0)
    fail(ErrorKind::Format, "gpt2 n_embd (" + std::to_string(c.n_embd) + ") must be a multiple of n_head (" +
                                std::to_string(c.n_head) + ")");
  std::string found;
  if (const json* act = field(config, {"activation_function"}, &found)) {
    if (!act->is_string()) fail(ErrorKind::Format, "gpt2 config field 'activation_function' must be a string");
    c.activation_function = act->get<std::string>();
  }
  static const char* kActivations[] = {"gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu", "swish"};
  if (std::find(std::begin(kActivations), std::end(kActivations), c.activation_function) == std::end(kActivations))
    fail(ErrorKind::Unsupported, "gpt2 activation_function '" + c.activation_function +
                                     "' is not supported (supported: gelu_new, gelu, gelu_pytorch_tanh, relu, silu)");
  c.resid_pdrop = number_field(config, "resid_pdrop", c.resid_pdrop);
  c.embd_pdrop = number_field(config, "embd_pdrop", c.embd_pdrop);
  c.attn_pdrop = number_field(config, "attn_pdrop", c.attn_pdrop);
  c.layer_norm_epsilon = number_field(config, "layer_norm_epsilon", c.layer_norm_epsilon);
  c.scale_attn_weights = bool_field(config, "scale_attn_weights", c.scale_attn_weights);
  c.scale_attn_by_inverse_layer_idx =
      bool_field(config, "scale_attn_by_inverse_layer_idx", c.scale_attn_by_inverse_layer_idx);
  c.reorder_and_upcast_attn = bool_field(config, "reorder_and_upcast_attn", c.reorder_and_upcast_attn);
  c.tie_word_embeddings = bool_field(config, "tie_word_embeddings", c.tie_word_embeddings);
  if (bool_field(config, "add_cross_attention", false))
    fail(ErrorKind::Unsupported, "gpt2 with add_cross_attention (an encoder-decoder GPT-2) is not supported");
  return c;
}

GPT2AttentionImpl::GPT2AttentionImpl(const GPT2Config& config, int64_t layer_index)
    : AttentionHooks(config.n_head, config.n_embd / config.n_head, true, true),
      n_embd_(config.n_embd),
      n_head_(config.n_head),
      attn_pdrop_(config.attn_pdrop),
      resid_pdrop_(config.resid_pdrop),
      upcast_(config.reorder_and_upcast_attn) {
  scale_ = config.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(n_embd_ / n_head_)) : 1.0;
  if (config.scale_attn_by_inverse_layer_idx) scale_ /= static_cast<double>(layer_index + 1);
  register_module("c_attn", Conv1D(n_embd_, 3 * n_embd_));
  register_module("c_proj", Conv1D(n_embd_, n_embd_));
}

at::Tensor GPT2AttentionImpl::forward(const at::Tensor& hidden, const GPT2AttentionContext& context,
                                      const LayerKV& past, LayerKV* present) {
  const int64_t batch = hidden.size(0), length = hidden.size(1), head_dim = n_embd_ / n_head_;
  std::vector<at::Tensor> qkv = forward_child(*this, "c_attn", hidden).split(n_embd_, 2);
  auto heads = [&](const at::Tensor& x) { return x.view({batch, length, n_head_, head_dim}).transpose(1, 2); };
  at::Tensor query = heads(qkv[0]), key = heads(qkv[1]), value = heads(qkv[2]);
  if (past.defined()) {
    const LayerKV kv = adapt_past(past, hidden);
    key = at::cat({kv.key.to(key.scalar_type()), key}, 2);
    value = at::cat({kv.value.to(value.scalar_type()), value}, 2);
  }
  if (present) *present = LayerKV{key, value};
  const double p = is_training() ? attn_pdrop_ : 0.0;
  at::Tensor out = upcast_ ? compat::masked_attention(query.to(at::kFloat), key.to(at::kFloat), value.to(at::kFloat),
                                                      context.mask, scale_, p)
                                 .to(query.scalar_type())
                           : compat::masked_attention(query, key, value, context.mask, scale_, p);
  out = add_heads_terms(out.transpose(1, 2).reshape({batch, length, n_embd_}), hidden);
  return maybe_dropout(forward_child(*this, "c_proj", out), resid_pdrop_, is_training());
}

GPT2MLPImpl::GPT2MLPImpl(const GPT2Config& config)
    : act_(config.activation_function), resid_pdrop_(config.resid_pdrop) {
  register_module("c_fc", Conv1D(config.n_embd, config.n_inner));
  register_module("c_proj", Conv1D(config.n_inner, config.n_embd));
}

at::Tensor GPT2MLPImpl::forward(const at::Tensor& input) {
  at::Tensor h = activate(act_, forward_child(*this, "c_fc", input));
  return maybe_dropout(forward_child(*this, "c_proj", h), resid_pdrop_, is_training());
}

GPT2BlockImpl::GPT2BlockImpl(const GPT2Config& config, int64_t layer_index) {
  auto norm = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd}).eps(config.layer_norm_epsilon));
  };
  register_module("ln_1", norm());
  attn_ = register_module("attn", std::make_shared<GPT2AttentionImpl>(config, layer_index));
  register_module("ln_2", norm());
  register_module("mlp", std::make_shared<GPT2MLPImpl>(config));
}

at::Tensor GPT2BlockImpl::forward(const at::Tensor& hidden, const GPT2AttentionContext& context, const LayerKV& past,
                                  LayerKV* present) {
  at::Tensor residual = hidden + attn_->forward(forward_child(*this, "ln_1", hidden), context, past, present);
  return residual + forward_child(*this, "mlp", forward_child(*this, "ln_2", residual));
}

GPT2ModelImpl::GPT2ModelImpl(const GPT2Config& config) {
  register_module("wte", torch::nn::Embedding(config.vocab_size, config.n_embd));
  register_module("wpe", torch::nn::Embedding(config.n_positions, config.n_embd));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < config.n_layer; ++i) {
    blocks.push_back(std::make_shared<GPT2BlockImpl>(config, i));
    list->push_back(blocks.back());
  }
  register_module("h", list);
  register_module("ln_f",
                  torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd}).eps(config.layer_norm_epsilon)));
}

GPT2LMHeadModel::GPT2LMHeadModel(const json& config) : json_(config), config_(GPT2Config::from_json(config)) {
  transformer_ = register_module("transformer", std::make_shared<GPT2ModelImpl>(config_));
  if (config_.tie_word_embeddings)
    register_module("lm_head", std::make_shared<TiedLinearImpl>(transformer_->named_parameters()["wte.weight"]));
  else
    register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(config_.n_embd, config_.vocab_size).bias(false)));
  at::NoGradGuard no_grad;
  for (auto& parameter : parameters()) parameter.zero_();  // create_model's contract: zero until loaded
  eval();  // as from_pretrained returns it; train() enables the dropouts
}

torch::nn::Module& GPT2LMHeadModel::input_embeddings() { return *transformer_->named_children()["wte"]; }

at::Tensor GPT2LMHeadModel::embed(const at::Tensor& input_ids) {
  return forward_child(*transformer_, "wte", input_ids);
}

bool GPT2LMHeadModel::is_optional_key(const std::string& key) const {
  auto ends_with = [&](const std::string& suffix) {
    return key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".attn.bias") || ends_with(".attn.masked_bias")) return true;
  return config_.tie_word_embeddings && key == "lm_head.weight";
}

ModelOutput GPT2LMHeadModel::forward(const ModelInputs& inputs) {
  if (inputs.input_ids.defined() == inputs.inputs_embeds.defined())
    fail(ErrorKind::InvalidArgument, "gpt2 forward needs exactly one of input_ids and inputs_embeds");
  const at::Device device = parameters().front().device();
  at::Tensor hidden;
  if (inputs.input_ids.defined()) {
    if (inputs.input_ids.dim() != 2)
      fail(ErrorKind::InvalidArgument, "gpt2 input_ids must be [batch, length], got " +
                                           c10::str(inputs.input_ids.sizes()));
    hidden = embed(inputs.input_ids.to(device));
  } else {
    if (inputs.inputs_embeds.dim() != 3 || inputs.inputs_embeds.size(2) != config_.n_embd)
      fail(ErrorKind::InvalidArgument, "gpt2 inputs_embeds must be [batch, length, " + std::to_string(config_.n_embd) +
                                           "], got " + c10::str(inputs.inputs_embeds.sizes()));
    hidden = inputs.inputs_embeds.to(device);
  }
  const int64_t batch = hidden.size(0), length = hidden.size(1), head_dim = config_.n_embd / config_.n_head;

  const PastKeyValues* past = inputs.past_key_values && !inputs.past_key_values->self_attn.empty()
                                  ? &*inputs.past_key_values
                                  : nullptr;
  const int64_t past_length = past ? past->length() : 0;
  if (past) {
    if (static_cast<int64_t>(past->self_attn.size()) != config_.n_layer)
      fail(ErrorKind::InvalidArgument, "gpt2 past_key_values has " + std::to_string(past->self_attn.size()) +
                                           " layers, the model has " + std::to_string(config_.n_layer));
    const std::vector<int64_t> expected = {batch, config_.n_head, past_length, head_dim};
    for (size_t i = 0; i < past->self_attn.size(); ++i) {
      const LayerKV& kv = past->self_attn[i];
      if (!kv.key.defined() || !kv.value.defined() || kv.key.sizes() != expected || kv.value.sizes() != expected)
        fail(ErrorKind::InvalidArgument, "gpt2 past_key_values layer " + std::to_string(i) +
                                             " must hold keys and values of shape " +
                                             c10::str(at::IntArrayRef(expected)) +
                                             " [batch, heads, past length, head_dim]");
    }
  }

  at::Tensor positions;
  if (inputs.position_ids.defined()) {
    positions = inputs.position_ids.to(device);
    if (positions.dim() == 1) positions = positions.unsqueeze(0);
    if (positions.dim() != 2 || positions.size(1) != length || (positions.size(0) != 1 && positions.size(0) != batch))
      fail(ErrorKind::InvalidArgument, "gpt2 position_ids must be [batch or 1, " + std::to_string(length) +
                                           "], got " + c10::str(inputs.position_ids.sizes()));
    if (length > 0 && (positions.min().item<int64_t>() < 0 || positions.max().item<int64_t>() >= config_.n_positions))
      fail(ErrorKind::InvalidArgument,
           "gpt2 position_ids must lie in [0, n_positions = " + std::to_string(config_.n_positions) + ")");
  } else {
    if (past_length + length > config_.n_positions)
      fail(ErrorKind::InvalidArgument, "gpt2 sequence of " + std::to_string(past_length + length) +
                                           " positions exceeds n_positions = " + std::to_string(config_.n_positions));
    positions = (at::arange(length, at::TensorOptions().dtype(at::kLong).device(device)) + past_length).unsqueeze(0);
  }
  hidden = hidden + forward_child(*transformer_, "wpe", positions);
  if (inputs.token_type_ids.defined()) hidden = hidden + embed(inputs.token_type_ids.to(device));
  hidden = maybe_dropout(hidden, config_.embd_pdrop, is_training());

  GPT2AttentionContext context;
  context.mask = causal_attention_mask(batch, length, past_length, inputs.attention_mask, std::nullopt, device);
  std::optional<PastKeyValues> present;
  if (inputs.use_cache) present.emplace().self_attn.resize(config_.n_layer);
  hidden = run_decoder_layers(transformer_->blocks, hidden, context, past, present);
  hidden = forward_child(*transformer_, "ln_f", hidden);

  ModelOutput output;
  output.logits = forward_child(*this, "lm_head", hidden);
  output.past_key_values = std::move(present);
  if (inputs.labels.defined()) {
    if (inputs.labels.sizes() != at::IntArrayRef({batch, length}))
      fail(ErrorKind::InvalidArgument, "gpt2 labels must be [" + std::to_string(batch) + ", " +
                                           std::to_string(length) + "] like the inputs, got " +
                                           c10::str(inputs.labels.sizes()));
    // transformers' ForCausalLMLoss: position t predicts label t + 1; the last position has no target.
    at::Tensor targets = at::constant_pad_nd(inputs.labels.to(device, at::kLong), {0, 1}, -100).slice(1, 1);
    output.loss = at::cross_entropy_loss(output.logits.to(at::kFloat).reshape({-1, config_.vocab_size}),
                                         targets.reshape({-1}), {}, at::Reduction::Mean, -100);
  }
  return output;
}

namespace {
const bool registered = register_model_type(
    "gpt2", [](const json& config) -> std::shared_ptr<Model> { return std::make_shared<GPT2LMHeadModel>(config); });
}  // namespace

}  // namespace peft4j::models
