#include "peft4j/models/llama.h"

#include <cmath>
#include <set>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/models/checkpointing.h"
#include "peft4j/models/layer_replication.h"

namespace peft4j::models {

namespace {

using nlohmann::json;

// The field's value, or nullptr when absent or null (transformers treats both as "use the default").
const json* field(const json& config, const std::string& name) {
  auto it = config.find(name);
  return it == config.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void bad_field(const std::string& model_type, const std::string& name, const std::string& expected,
                            const json& value) {
  fail(ErrorKind::Format, model_type + " config field '" + name + "' must be " + expected + ", got " + value.dump());
}

int64_t int_field(const json& config, const std::string& model_type, const std::string& name, int64_t fallback) {
  const json* value = field(config, name);
  if (!value) return fallback;
  if (!value->is_number_integer()) bad_field(model_type, name, "an integer", *value);
  return value->get<int64_t>();
}

std::optional<int64_t> optional_int_field(const json& config, const std::string& model_type, const std::string& name) {
  if (!field(config, name)) return std::nullopt;
  return int_field(config, model_type, name, 0);
}

double number_field(const json& config, const std::string& model_type, const std::string& name, double fallback) {
  const json* value = field(config, name);
  if (!value) return fallback;
  if (!value->is_number()) bad_field(model_type, name, "a number", *value);
  return value->get<double>();
}

bool bool_field(const json& config, const std::string& model_type, const std::string& name, bool fallback) {
  const json* value = field(config, name);
  if (!value) return fallback;
  if (!value->is_boolean()) bad_field(model_type, name, "true or false", *value);
  return value->get<bool>();
}

std::string string_field(const json& config, const std::string& model_type, const std::string& name,
                         const std::string& fallback) {
  const json* value = field(config, name);
  if (!value) return fallback;
  if (!value->is_string()) bad_field(model_type, name, "a string", *value);
  return value->get<std::string>();
}

void require_positive(const std::string& model_type, const std::string& name, int64_t value) {
  if (value <= 0) fail(ErrorKind::Format, model_type + " config field '" + name + "' must be positive, got " +
                                              std::to_string(value));
}

// transformers' ACT2FN entries that a gated MLP uses.
at::Tensor activate(const std::string& name, const at::Tensor& x) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (name == "gelu_new")  // NewGELUActivation's formula, operation for operation
    return 0.5 * x * (1.0 + at::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * at::pow(x, 3.0))));
  if (name == "relu") return at::relu(x);
  fail(ErrorKind::Internal, "unchecked activation '" + name + "'");
}

bool known_activation(const std::string& name) {
  static const std::set<std::string> names = {"silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu"};
  return names.count(name) > 0;
}

at::Tensor rotate_half(const at::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// repeat_kv: [B, kv_heads, L, D] -> [B, kv_heads * groups, L, D], each kv head serving `groups` query heads.
at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  auto sizes = x.sizes();
  return x.unsqueeze(2).expand({sizes[0], sizes[1], groups, sizes[2], sizes[3]}).reshape(
      {sizes[0], sizes[1] * groups, sizes[2], sizes[3]});
}

}  // namespace

// ---- configuration ----

RopeConfig RopeConfig::from_json(const json& config, int64_t max_position_embeddings) {
  const std::string model_type = string_field(config, "model", "model_type", "model");
  json params = json::object();
  if (const json* scaling = field(config, "rope_scaling")) {
    if (!scaling->is_object()) bad_field(model_type, "rope_scaling", "an object", *scaling);
    params = *scaling;
  } else if (const json* parameters = field(config, "rope_parameters")) {
    if (!parameters->is_object()) bad_field(model_type, "rope_parameters", "an object", *parameters);
    params = *parameters;
  }
  for (const char* layer_type : {"full_attention", "sliding_attention"})
    if (params.contains(layer_type))
      fail(ErrorKind::Unsupported, model_type + ": rope parameters per layer type are not supported");

  RopeConfig rope;
  rope.rope_theta = number_field(params, model_type, "rope_theta", number_field(config, model_type, "rope_theta", 10000.0));
  rope.rope_type = string_field(params, model_type, "type", "default");
  rope.rope_type = string_field(params, model_type, "rope_type", rope.rope_type);
  if (rope.rope_type == "default") return rope;
  if (rope.rope_type != "linear" && rope.rope_type != "llama3")
    fail(ErrorKind::Unsupported, model_type + ": rope_type '" + rope.rope_type +
                                     "' is not supported (supported: default, linear, llama3)");

  if (number_field(params, model_type, "partial_rotary_factor",
                   number_field(config, model_type, "partial_rotary_factor", 1.0)) != 1.0)
    fail(ErrorKind::Unsupported, model_type + ": partial_rotary_factor other than 1 is not supported");
  auto required = [&](const char* name) {
    if (!field(params, name))
      fail(ErrorKind::Format, model_type + " rope parameters of type '" + rope.rope_type + "' lack '" + name + "'");
    return number_field(params, model_type, name, 0.0);
  };
  rope.factor = required("factor");
  if (rope.rope_type == "llama3") {
    rope.low_freq_factor = required("low_freq_factor");
    rope.high_freq_factor = required("high_freq_factor");
    rope.original_max_position_embeddings = int_field(
        config, model_type, "original_max_position_embeddings",
        int_field(params, model_type, "original_max_position_embeddings", max_position_embeddings));
  }
  return rope;
}

at::Tensor RopeConfig::inverse_frequencies(int64_t head_dim) const {
  // Same operations as modeling_rope_utils (python scalars meet f32 tensors: `a / t` is t.reciprocal() * a).
  at::Tensor exponent = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(rope_theta, exponent));
  if (rope_type == "linear") return inv_freq / factor;
  if (rope_type != "llama3") return inv_freq;

  const double old_context = static_cast<double>(original_max_position_embeddings);
  const double low_freq_wavelen = old_context / low_freq_factor;
  const double high_freq_wavelen = old_context / high_freq_factor;
  at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
  // Long wavelengths are divided by the factor, short ones kept, the band between interpolated smoothly.
  at::Tensor scaled = at::where(wavelen.gt(low_freq_wavelen), inv_freq / factor, inv_freq);
  at::Tensor smooth = (at::reciprocal(wavelen) * old_context - low_freq_factor) / (high_freq_factor - low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  at::Tensor is_medium = wavelen.lt(high_freq_wavelen).logical_not().logical_and(wavelen.gt(low_freq_wavelen).logical_not());
  return at::where(is_medium, smoothed, scaled);
}

LlamaConfig LlamaConfig::from_json(const json& config) {
  if (!config.is_object()) fail(ErrorKind::Format, "model config is not a JSON object");
  LlamaConfig c;
  c.model_type = string_field(config, "model", "model_type", "llama");
  const std::string& type = c.model_type;
  if (type != "llama" && type != "qwen2" && type != "mistral")
    fail(ErrorKind::Unsupported, "the Llama family has no model_type '" + type + "'");
  const bool qwen2 = type == "qwen2";
  const bool mistral = type == "mistral";

  // Defaults of LlamaConfig, Qwen2Config and MistralConfig in transformers.
  c.vocab_size = int_field(config, type, "vocab_size", qwen2 ? 151936 : 32000);
  c.hidden_size = int_field(config, type, "hidden_size", 4096);
  c.intermediate_size = int_field(config, type, "intermediate_size", qwen2 ? 22016 : mistral ? 14336 : 11008);
  c.num_hidden_layers = int_field(config, type, "num_hidden_layers", 32);
  c.num_attention_heads = int_field(config, type, "num_attention_heads", 32);
  c.num_key_value_heads = int_field(config, type, "num_key_value_heads", mistral ? 8 : c.num_attention_heads);
  c.max_position_embeddings =
      int_field(config, type, "max_position_embeddings", qwen2 ? 32768 : mistral ? 4096 * 32 : 2048);
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers},
        {"num_attention_heads", c.num_attention_heads}, {"num_key_value_heads", c.num_key_value_heads},
        {"max_position_embeddings", c.max_position_embeddings}})
    require_positive(type, name, value);
  c.head_dim = int_field(config, type, "head_dim", c.hidden_size / c.num_attention_heads);
  require_positive(type, "head_dim", c.head_dim);
  if (c.head_dim % 2 != 0)
    fail(ErrorKind::Format, type + " head_dim must be even for rotary embeddings, got " + std::to_string(c.head_dim));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(ErrorKind::Format, type + " num_attention_heads (" + std::to_string(c.num_attention_heads) +
                                ") must be a multiple of num_key_value_heads (" +
                                std::to_string(c.num_key_value_heads) + ")");

  c.rms_norm_eps = number_field(config, type, "rms_norm_eps", 1e-6);
  c.hidden_act = string_field(config, type, "hidden_act", "silu");
  if (!known_activation(c.hidden_act))
    fail(ErrorKind::Unsupported, type + " hidden_act '" + c.hidden_act +
                                     "' is not supported (supported: silu, swish, gelu, gelu_pytorch_tanh, gelu_new, relu)");
  c.tie_word_embeddings = bool_field(config, type, "tie_word_embeddings", false);
  c.attention_dropout = number_field(config, type, "attention_dropout", 0.0);
  c.pad_token_id = optional_int_field(config, type, "pad_token_id");
  if (c.pad_token_id && (*c.pad_token_id < 0 || *c.pad_token_id >= c.vocab_size))
    fail(ErrorKind::Format, type + " pad_token_id " + std::to_string(*c.pad_token_id) + " is outside the vocabulary");

  if (qwen2) {
    c.qkv_bias = true;
  } else if (!mistral) {
    c.qkv_bias = c.o_bias = bool_field(config, type, "attention_bias", false);
    c.mlp_bias = bool_field(config, type, "mlp_bias", false);
  }
  c.rope = RopeConfig::from_json(config, c.max_position_embeddings);

  c.layer_windows.assign(c.num_hidden_layers, std::nullopt);
  if (mistral) {
    std::optional<int64_t> window = optional_int_field(config, type, "sliding_window");
    if (window) require_positive(type, "sliding_window", *window);
    c.layer_windows.assign(c.num_hidden_layers, window);
  } else if (qwen2) {
    std::optional<int64_t> window = config.contains("sliding_window")
                                        ? optional_int_field(config, type, "sliding_window")
                                        : std::optional<int64_t>(4096);
    if (!bool_field(config, type, "use_sliding_window", false)) window.reset();
    if (window) require_positive(type, "sliding_window", *window);
    const int64_t max_window_layers = int_field(config, type, "max_window_layers", 28);
    const json* layer_types = field(config, "layer_types");
    if (layer_types && (!layer_types->is_array() || static_cast<int64_t>(layer_types->size()) != c.num_hidden_layers))
      bad_field(type, "layer_types", "a list with one entry per layer", *layer_types);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      bool sliding = window && i >= max_window_layers;
      if (layer_types) {
        const json& entry = (*layer_types)[i];
        if (entry != "full_attention" && entry != "sliding_attention")
          bad_field(type, "layer_types[" + std::to_string(i) + "]", "\"full_attention\" or \"sliding_attention\"", entry);
        sliding = entry == "sliding_attention";
        if (sliding && !window)
          fail(ErrorKind::Format, type + " layer " + std::to_string(i) +
                                      " is a sliding_attention layer but no sliding_window is in use");
      }
      if (sliding) c.layer_windows[i] = window;
    }
  }
  return c;
}

// ---- modules ----

LlamaRMSNormImpl::LlamaRMSNormImpl(int64_t hidden_size, double eps) : hidden_size_(hidden_size), eps_(eps) { reset(); }

void LlamaRMSNormImpl::reset() { weight = register_parameter("weight", at::ones({hidden_size_})); }

at::Tensor LlamaRMSNormImpl::forward(const at::Tensor& input) {
  at::Tensor x = input.to(at::kFloat);
  at::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  x = x * at::rsqrt(variance + eps_);
  return weight * x.to(input.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& config, int64_t layer_index)
    : AttentionHooks(config.num_attention_heads, config.head_dim, true, true),
      num_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      dropout_(config.attention_dropout),
      window_(config.layer_windows.at(layer_index)) {
  using torch::nn::Linear;
  using torch::nn::LinearOptions;
  const int64_t hidden = config.hidden_size;
  register_module("q_proj", Linear(LinearOptions(hidden, num_heads_ * head_dim_).bias(config.qkv_bias)));
  register_module("k_proj", Linear(LinearOptions(hidden, num_kv_heads_ * head_dim_).bias(config.qkv_bias)));
  register_module("v_proj", Linear(LinearOptions(hidden, num_kv_heads_ * head_dim_).bias(config.qkv_bias)));
  register_module("o_proj", Linear(LinearOptions(num_heads_ * head_dim_, hidden).bias(config.o_bias)));
}

void LlamaAttentionImpl::project(const at::Tensor& hidden, const LlamaAttentionContext& context, at::Tensor* query,
                                 at::Tensor* key, at::Tensor* value) {
  const int64_t batch = hidden.size(0), length = hidden.size(1);
  auto heads = [&](const at::Tensor& x) { return x.view({batch, length, -1, head_dim_}).transpose(1, 2); };
  at::Tensor q = heads(forward_child(*this, "q_proj", hidden));
  at::Tensor k = heads(forward_child(*this, "k_proj", hidden));
  *value = heads(forward_child(*this, "v_proj", hidden));
  at::Tensor cos = context.cos.unsqueeze(1), sin = context.sin.unsqueeze(1);
  *query = q * cos + rotate_half(q) * sin;
  *key = k * cos + rotate_half(k) * sin;
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& hidden, const LlamaAttentionContext& context,
                                       const LayerKV& past, LayerKV* present) {
  at::Tensor query, key, value;
  project(hidden, context, &query, &key, &value);
  if (past.defined()) {
    const LayerKV kv = adapt_past(past, hidden);
    key = at::cat({kv.key.to(key.scalar_type()), key}, 2);
    value = at::cat({kv.value.to(value.scalar_type()), value}, 2);
  }
  if (present) *present = LayerKV{key, value};
  const int64_t groups = num_heads_ / num_kv_heads_;
  const at::Tensor& mask = window_ ? context.window_masks.at(*window_) : context.full_mask;
  at::Tensor out = compat::masked_attention(query, repeat_kv(key, groups), repeat_kv(value, groups), mask,
                                            1.0 / std::sqrt(static_cast<double>(head_dim_)),
                                            is_training() ? dropout_ : 0.0);
  out = add_heads_terms(out.transpose(1, 2).reshape({hidden.size(0), hidden.size(1), num_heads_ * head_dim_}), hidden);
  at::Tensor result = forward_child(*this, "o_proj", out);
  if (output_term_) {
    at::Tensor term = output_term_(*this, query);
    if (term.defined()) result = result + term;
  }
  return result;
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& config) : act_(config.hidden_act) {
  using torch::nn::Linear;
  using torch::nn::LinearOptions;
  const int64_t hidden = config.hidden_size, inner = config.intermediate_size;
  register_module("gate_proj", Linear(LinearOptions(hidden, inner).bias(config.mlp_bias)));
  register_module("up_proj", Linear(LinearOptions(hidden, inner).bias(config.mlp_bias)));
  register_module("down_proj", Linear(LinearOptions(inner, hidden).bias(config.mlp_bias)));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& input) {
  at::Tensor gated = activate(act_, forward_child(*this, "gate_proj", input)) * forward_child(*this, "up_proj", input);
  return forward_child(*this, "down_proj", gated);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& config, int64_t layer_index) {
  self_attn_ = register_module("self_attn", std::make_shared<LlamaAttentionImpl>(config, layer_index));
  register_module("mlp", std::make_shared<LlamaMLPImpl>(config));
  register_module("input_layernorm", std::make_shared<LlamaRMSNormImpl>(config.hidden_size, config.rms_norm_eps));
  register_module("post_attention_layernorm",
                  std::make_shared<LlamaRMSNormImpl>(config.hidden_size, config.rms_norm_eps));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& hidden, const LlamaAttentionContext& context,
                                          const LayerKV& past, LayerKV* present) {
  at::Tensor h = self_attn_->forward(forward_child(*this, "input_layernorm", hidden), context, past, present);
  at::Tensor residual = hidden + h;
  return residual + forward_child(*this, "mlp", forward_child(*this, "post_attention_layernorm", residual));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config) {
  auto embed_options = torch::nn::EmbeddingOptions(config.vocab_size, config.hidden_size);
  if (config.pad_token_id) embed_options.padding_idx(*config.pad_token_id);
  register_module("embed_tokens", torch::nn::Embedding(embed_options));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<LlamaDecoderLayerImpl>(config, i));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  register_module("norm", std::make_shared<LlamaRMSNormImpl>(config.hidden_size, config.rms_norm_eps));
}

// ---- the causal LM ----

LlamaForCausalLM::LlamaForCausalLM(const json& config) : json_(config), config_(LlamaConfig::from_json(config)) {
  inv_freq_ = config_.rope.inverse_frequencies(config_.head_dim);
  model_ = register_module("model", std::make_shared<LlamaModelImpl>(config_));
  if (config_.tie_word_embeddings)
    register_module("lm_head", std::make_shared<TiedLinearImpl>(model_->named_parameters()["embed_tokens.weight"]));
  else
    register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(config_.hidden_size, config_.vocab_size).bias(false)));
  at::NoGradGuard no_grad;
  for (auto& parameter : parameters()) parameter.zero_();  // create_model's contract: zero until loaded
  eval();  // as from_pretrained returns it; train() enables attention dropout
}

torch::nn::Module& LlamaForCausalLM::input_embeddings() {
  return *model_->named_children()["embed_tokens"];
}

at::Tensor LlamaForCausalLM::embed(const at::Tensor& input_ids) {
  return forward_child(*model_, "embed_tokens", input_ids);
}

bool LlamaForCausalLM::is_optional_key(const std::string& key) const {
  static const std::string inv_freq = "rotary_emb.inv_freq";
  if (key.size() >= inv_freq.size() && key.compare(key.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0)
    return true;
  return config_.tie_word_embeddings && key == "lm_head.weight";
}

void LlamaForCausalLM::replicate_layers(const std::vector<std::pair<int64_t, int64_t>>& map) {
  const std::vector<int64_t> sources = replicated_layer_sources(map, config_.num_hidden_layers);
  std::vector<std::shared_ptr<LlamaDecoderLayerImpl>> layers;
  std::vector<std::optional<int64_t>> windows;
  torch::nn::ModuleList list;
  std::vector<bool> used(model_->layers.size(), false);
  for (int64_t i : sources) {
    // The first use of a layer keeps the module itself; a repeat is a new one sharing its weights. A copy keeps
    // its source's attention window (transformers copies the module).
    std::shared_ptr<LlamaDecoderLayerImpl> layer = model_->layers[i];
    if (used[i]) {
      layer = std::make_shared<LlamaDecoderLayerImpl>(config_, i);
      layer->to(model_->layers[i]->parameters().front().device());
      share_weights(*layer, *model_->layers[i]);
      if (!model_->layers[i]->is_training()) layer->eval();
    }
    used[i] = true;
    layers.push_back(layer);
    windows.push_back(config_.layer_windows.at(i));
    list->push_back(layer);
  }
  model_->layers = layers;
  model_->replace_module("layers", list.ptr());
  config_.layer_windows = windows;
  config_.num_hidden_layers = static_cast<int64_t>(layers.size());
  json_["num_hidden_layers"] = config_.num_hidden_layers;
}

ModelOutput LlamaForCausalLM::forward(const ModelInputs& inputs) {
  const std::string& type = config_.model_type;
  if (inputs.input_ids.defined() == inputs.inputs_embeds.defined())
    fail(ErrorKind::InvalidArgument, type + " forward needs exactly one of input_ids and inputs_embeds");
  if (inputs.token_type_ids.defined())
    fail(ErrorKind::InvalidArgument, type + " takes no token_type_ids (transformers' " + type + " has none)");
  // Inputs move to the model's device; the compute dtype is that of the embeddings (or of inputs_embeds as
  // given), as in transformers.
  const at::Device device = parameters().front().device();
  at::Tensor hidden;
  if (inputs.input_ids.defined()) {
    if (inputs.input_ids.dim() != 2)
      fail(ErrorKind::InvalidArgument, type + " input_ids must be [batch, length], got " +
                                           c10::str(inputs.input_ids.sizes()));
    hidden = embed(inputs.input_ids.to(device));
  } else {
    if (inputs.inputs_embeds.dim() != 3 || inputs.inputs_embeds.size(2) != config_.hidden_size)
      fail(ErrorKind::InvalidArgument, type + " inputs_embeds must be [batch, length, " +
                                           std::to_string(config_.hidden_size) + "], got " +
                                           c10::str(inputs.inputs_embeds.sizes()));
    hidden = inputs.inputs_embeds.to(device);
  }
  const at::ScalarType dtype = hidden.scalar_type();
  const int64_t batch = hidden.size(0), length = hidden.size(1);

  const PastKeyValues* past = inputs.past_key_values && !inputs.past_key_values->self_attn.empty()
                                  ? &*inputs.past_key_values
                                  : nullptr;
  const int64_t past_length = past ? past->length() : 0;
  if (past) {
    if (static_cast<int64_t>(past->self_attn.size()) != config_.num_hidden_layers)
      fail(ErrorKind::InvalidArgument, type + " past_key_values has " + std::to_string(past->self_attn.size()) +
                                           " layers, the model has " + std::to_string(config_.num_hidden_layers));
    const std::vector<int64_t> expected = {batch, config_.num_key_value_heads, past_length, config_.head_dim};
    for (size_t i = 0; i < past->self_attn.size(); ++i) {
      const LayerKV& kv = past->self_attn[i];
      if (!kv.key.defined() || !kv.value.defined() || kv.key.sizes() != expected || kv.value.sizes() != expected)
        fail(ErrorKind::InvalidArgument,
             type + " past_key_values layer " + std::to_string(i) + " must hold keys and values of shape " +
                 c10::str(at::IntArrayRef(expected)) + " [batch, kv_heads, past length, head_dim]");
    }
  }

  at::Tensor positions = inputs.position_ids.defined()
                             ? inputs.position_ids.to(device)
                             : (at::arange(length, at::TensorOptions().dtype(at::kLong).device(device)) + past_length)
                                   .unsqueeze(0);
  if (positions.dim() == 1) positions = positions.unsqueeze(0);
  if (positions.dim() != 2 || positions.size(1) != length || (positions.size(0) != 1 && positions.size(0) != batch))
    fail(ErrorKind::InvalidArgument, type + " position_ids must be [batch or 1, " + std::to_string(length) +
                                         "], got " + c10::str(inputs.position_ids.sizes()));

  LlamaAttentionContext context;
  // Rotary angles in f32, then cast to the compute dtype, as HF's rotary embedding does.
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_.to(device).view({1, 1, -1});
  at::Tensor angles = at::cat({freqs, freqs}, -1);
  context.cos = angles.cos().to(dtype);
  context.sin = angles.sin().to(dtype);
  context.full_mask = causal_attention_mask(batch, length, past_length, inputs.attention_mask, std::nullopt, device);
  for (const auto& window : config_.layer_windows)
    if (window && !context.window_masks.count(*window))
      context.window_masks[*window] =
          causal_attention_mask(batch, length, past_length, inputs.attention_mask, window, device);

  std::optional<PastKeyValues> present;
  if (inputs.use_cache) present.emplace().self_attn.resize(config_.num_hidden_layers);
  hidden = run_decoder_layers(model_->layers, hidden, context, past, present);
  hidden = forward_child(*model_, "norm", hidden);

  ModelOutput output;
  output.logits = forward_child(*this, "lm_head", hidden);
  output.past_key_values = std::move(present);
  if (inputs.labels.defined()) {
    if (inputs.labels.sizes() != at::IntArrayRef({batch, length}))
      fail(ErrorKind::InvalidArgument, type + " labels must be [" + std::to_string(batch) + ", " +
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
const bool registered = [] {
  auto factory = [](const json& config) -> std::shared_ptr<Model> {
    return std::make_shared<LlamaForCausalLM>(config);
  };
  register_model_type("llama", factory);
  register_model_type("qwen2", factory);
  register_model_type("mistral", factory);
  return true;
}();
}  // namespace

}  // namespace peft4j::models
