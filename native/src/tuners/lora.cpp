#include "peft4j/tuners/lora.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/bottleneck.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's LoraConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "LORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"lora_alpha", 8}, {"lora_dropout", 0.0}, {"fan_in_fan_out", false},
    {"bias", "none"}, {"use_rslora", false}, {"modules_to_save", nullptr}, {"init_lora_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"rank_pattern", nlohmann::json::object()},
    {"alpha_pattern", nlohmann::json::object()}, {"megatron_config", nullptr}, {"megatron_core", "megatron.core"},
    {"trainable_token_indices", nullptr}, {"loftq_config", nlohmann::json::object()}, {"eva_config", nullptr},
    {"corda_config", nullptr}, {"use_dora", false}, {"use_qalora", false}, {"qalora_group_size", 16},
    {"layer_replication", nullptr}, {"lora_bias", false}, {"target_parameters", nullptr},
    {"alora_invocation_tokens", nullptr}, {"arrow_config", nullptr}, {"ensure_weight_tying", false},
    {"kasa_config", nullptr}, {"lora_ga_config", nullptr}, {"monteclora_config", nullptr}, {"use_bdlora", nullptr},
    {"velora_config", nullptr}};

// Options PEFT has that change LoRA's computation in ways peft4j does not reproduce: refused by name.
const char* kUnsupportedWhenSet[] = {"megatron_config", "trainable_token_indices", "eva_config", "corda_config",
                                     "layer_replication", "target_parameters", "alora_invocation_tokens",
                                     "arrow_config", "kasa_config", "lora_ga_config", "monteclora_config",
                                     "velora_config"};

bool is_set(const nlohmann::json& v) {
  return !(v.is_null() || (v.is_object() && v.empty()) || (v.is_array() && v.empty()) || (v.is_boolean() && !v.get<bool>()));
}

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class LoraTuner : public Tuner {
 public:
  std::string peft_type() const override { return "LORA"; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    for (const char* field : kUnsupportedWhenSet)
      if (is_set(config[field]))
        fail(ErrorKind::Unsupported, std::string("LORA config field '") + field + "' is not supported by peft4j (value " +
                                         config[field].dump() + ")");
    if (config_bool(config, "use_qalora", false))
      fail(ErrorKind::Unsupported, "LORA config field 'use_qalora' is not supported by peft4j");
    if (config_bool(config, "ensure_weight_tying", false))
      fail(ErrorKind::Unsupported, "LORA config field 'ensure_weight_tying' is not supported by peft4j");
    if (is_set(config["loftq_config"]))
      fail(ErrorKind::Unsupported, "LORA config field 'loftq_config' is not supported by peft4j");
    const auto& init = config["init_lora_weights"];
    if (!init.is_boolean() && !(init.is_string() && init.get<std::string>() == "gaussian"))
      fail(ErrorKind::Unsupported, "LORA config field 'init_lora_weights' = " + init.dump() +
                                       " is not supported by peft4j (true, false or \"gaussian\")");
    if (config_int(config, "r", 8) <= 0)
      fail(ErrorKind::InvalidArgument, "LORA config field 'r' must be a positive integer, got " + config["r"].dump());
    double dropout = config_double(config, "lora_dropout", 0.0);
    if (dropout < 0 || dropout >= 1)
      fail(ErrorKind::InvalidArgument, "LORA config field 'lora_dropout' must be in [0, 1), got " + config["lora_dropout"].dump());
    config_double(config, "lora_alpha", 8);
    std::string bias = config_string(config, "bias", "none");
    if (bias != "none" && bias != "all" && bias != "lora_only")
      fail(ErrorKind::InvalidArgument, "LORA config field 'bias' must be \"none\", \"all\" or \"lora_only\", got \"" + bias + "\"");
    if (config_bool(config, "use_dora", false) && config_bool(config, "lora_bias", false))
      fail(ErrorKind::Unsupported, "LORA with both use_dora and lora_bias is not supported by peft4j");
    for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
      const auto& p = config[pattern];
      if (!p.is_object())
        fail(ErrorKind::InvalidArgument, std::string("LORA config field '") + pattern + "' must be an object");
      for (auto it = p.begin(); it != p.end(); ++it)
        if (!it.value().is_number())
          fail(ErrorKind::InvalidArgument, std::string("LORA config field '") + pattern + "' entry '" + it.key() +
                                               "' must be a number");
    }
    require_target_modules(config);
    return config;
  }

  bool can_wrap(const torch::nn::Module& m) const override {
    return dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const models::Conv1DImpl*>(&m) ||
           dynamic_cast<const torch::nn::EmbeddingImpl*>(&m) || dynamic_cast<const LoraLayer*>(&m);
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    auto layer = std::dynamic_pointer_cast<LoraLayer>(target);
    if (!layer) layer = std::make_shared<LoraLayer>(target, ctx.state);
    int64_t r = config_int(ctx.config, "r", 8);
    double alpha = config_double(ctx.config, "lora_alpha", 8);
    if (auto key = pattern_key(ctx.config["rank_pattern"], ctx.key)) r = ctx.config["rank_pattern"][*key].get<int64_t>();
    if (auto key = pattern_key(ctx.config["alpha_pattern"], ctx.key))
      alpha = ctx.config["alpha_pattern"][*key].get<double>();
    layer->add(ctx.adapter, r, alpha, ctx.config, ctx.initialise);
    return layer;
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_lora_weights"] = true;
    return identity;
  }

  // DoRA's magnitude is a module holding "weight" in memory but is saved without ".weight", as PEFT does.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    std::string key = remove_adapter_name(model_key, adapter);
    const std::string dora = "lora_magnitude_vector.weight";
    if (key.size() >= dora.size() && key.compare(key.size() - dora.size(), dora.size(), dora) == 0)
      key.resize(key.size() - std::string(".weight").size());
    return key;
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LoraTuner>());

}  // namespace

LoraLayer::LoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  if (auto shape = linear_shape(*base)) {
    in_features_ = shape->in_features;
    out_features_ = shape->out_features;
    fan_in_fan_out_ = shape->fan_in_fan_out;
  } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(base.get())) {
    embedding_ = true;
    in_features_ = emb->weight.size(0);
    out_features_ = emb->weight.size(1);
  } else {
    fail(ErrorKind::Unsupported, "LoRA wraps Linear, Conv1D and Embedding modules only");
  }
  // Registration order as PEFT's LoraLayer, so parameters list in the same order.
  lora_A_ = register_module("lora_A", std::make_shared<AdapterDict>());
  lora_B_ = register_module("lora_B", std::make_shared<AdapterDict>());
  lora_embedding_A_ = register_module("lora_embedding_A", std::make_shared<AdapterDict>());
  lora_embedding_B_ = register_module("lora_embedding_B", std::make_shared<AdapterDict>());
  lora_magnitude_vector_ = register_module("lora_magnitude_vector", std::make_shared<AdapterDict>());
  gates_ = register_module("lora_gate", std::make_shared<AdapterDict>());
}

void LoraLayer::add_gate(const std::string& adapter) {
  if (embedding_ || lora_magnitude_vector_->contains(adapter))
    fail(ErrorKind::Unsupported, "a gated LoRA adapter wraps a Linear or Conv1D without DoRA");
  auto gate = make_linear(in_features_, 1, true);
  {
    at::NoGradGuard no_grad;
    gate->weight.normal_(0.0, 0.02);
  }
  gate->to(base_weight().device(), base_weight().scalar_type());
  gates_->put_module(adapter, gate.ptr());
}

bool LoraLayer::has_adapter(const std::string& adapter) const { return r_.count(adapter) > 0; }

at::Tensor LoraLayer::base_weight() const { return base_layer()->named_parameters(false)["weight"]; }

at::Tensor LoraLayer::weight_out_in() const {
  at::Tensor w = base_weight();
  return fan_in_fan_out_ ? w.t() : w;
}

at::Tensor LoraLayer::lora_a(const std::string& adapter) const {
  return embedding_ ? lora_embedding_A_->parameter(adapter)
                    : lora_A_->module(adapter).named_parameters(false)["weight"];
}

at::Tensor LoraLayer::lora_b(const std::string& adapter) const {
  return embedding_ ? lora_embedding_B_->parameter(adapter)
                    : lora_B_->module(adapter).named_parameters(false)["weight"];
}

void LoraLayer::add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "LoRA rank must be positive, got " + std::to_string(r));
  const bool dora = config_bool(config, "use_dora", false);
  const bool lora_bias = config_bool(config, "lora_bias", false);
  if (dora && embedding_) fail(ErrorKind::Unsupported, "DoRA on an Embedding layer is not supported by peft4j");
  at::NoGradGuard no_grad;
  auto options = at::TensorOptions().dtype(base_weight().scalar_type()).device(base_weight().device());
  const auto& init = config["init_lora_weights"];
  const bool default_init = init.is_boolean() && init.get<bool>();
  const bool gaussian = init.is_string();
  if (embedding_) {
    // PEFT draws both from randn, then zeros A and redraws B from N(0, 1) when initialising.
    at::Tensor a = at::randn({r, in_features_}, options);
    at::Tensor b = at::randn({out_features_, r}, options);
    if (initialise && (default_init || gaussian)) {
      a.zero_();
      b.normal_();
    }
    lora_embedding_A_->put_parameter(adapter, a);
    lora_embedding_B_->put_parameter(adapter, b);
  } else {
    auto a = make_linear(in_features_, r, false);
    auto b = make_linear(r, out_features_, lora_bias);
    a->to(options.device(), options.dtype().toScalarType());
    b->to(options.device(), options.dtype().toScalarType());
    if (initialise && default_init) {
      // kaiming_uniform_(a=sqrt(5)) as nn.Linear's own init: U(-1/sqrt(in), 1/sqrt(in))
      double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
      a->weight.uniform_(-bound, bound);
      b->weight.zero_();
      if (lora_bias) b->bias.zero_();
    } else if (initialise && gaussian) {
      a->weight.normal_(0.0, 1.0 / static_cast<double>(r));
      b->weight.zero_();
      if (lora_bias) b->bias.zero_();
    }
    lora_A_->put_module(adapter, a.ptr());
    lora_B_->put_module(adapter, b.ptr());
  }
  r_[adapter] = r;
  scaling_[adapter] = config_bool(config, "use_rslora", false) ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
  dropout_[adapter] = config_double(config, "lora_dropout", 0.0);
  if (dora) {
    // The magnitude starts as the row norms of the adapted weight, so an adapter starts where LoRA would.
    auto magnitude = std::make_shared<torch::nn::Module>();
    at::Tensor lora_weight = at::matmul(lora_b(adapter), lora_a(adapter));
    magnitude->register_parameter("weight", dora_weight_norm(lora_weight, scaling_[adapter]).clone());
    lora_magnitude_vector_->put_module(adapter, magnitude);
  }
}

at::Tensor LoraLayer::dora_weight_norm(const at::Tensor& lora_weight, double scale) const {
  at::Tensor weight = weight_out_in().to(lora_weight.scalar_type()) + scale * lora_weight;
  return weight.norm(2, {1}).to(weight.scalar_type());
}

at::Tensor LoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const double scale = scaling_.at(adapter);
  if (embedding_) {
    at::Tensor after_a = at::embedding(lora_embedding_A_->parameter(adapter).t(), x);
    return result + at::matmul(after_a, lora_embedding_B_->parameter(adapter).t()) * scale;
  }
  auto& a = lora_A_->module(adapter);
  auto& b = lora_B_->module(adapter);
  const double p = dropout_.at(adapter);
  at::Tensor input = x.to(lora_a(adapter).scalar_type());
  if (!lora_magnitude_vector_->contains(adapter)) {
    at::Tensor dropped = p > 0 ? at::dropout(input, p, is_training()) : input;
    at::Tensor update = models::forward_module(b, models::forward_module(a, dropped));
    if (gates_->contains(adapter)) return result + update * sequence_gate(input, gates_->module(adapter)).unsqueeze(1);
    return result + update * scale;
  }
  // DoRA (PEFT's DoraLinearVariant): rescale the adapted weight's rows to the learned magnitude; the norm is
  // treated as a constant (detached), as the paper's section 4.3 prescribes.
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor lora_weight = at::matmul(lora_b(adapter), lora_a(adapter)).to(input.scalar_type());
  at::Tensor weight = weight_out_in().to(input.scalar_type());
  at::Tensor weight_norm = (weight + scale * lora_weight.detach()).norm(2, {1}).detach();
  at::Tensor mag_norm_scale = (magnitude / weight_norm).view({1, -1});
  at::Tensor base_result;
  if (p == 0 || !is_training()) {
    base_result = result;
    auto params = base_layer()->named_parameters(false);
    if (const auto* bias = params.find("bias"); bias && bias->defined()) base_result = base_result - *bias;
  } else {
    input = at::dropout(input, p, true);
    base_result = at::linear(input, weight);
  }
  at::Tensor lora_result = models::forward_module(b, models::forward_module(a, input));
  return result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scale;
}

at::Tensor LoraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor a = lora_a(adapter);
  at::Tensor b = lora_b(adapter);
  // Low-precision matmuls are slow on CPUs: compute in f32 there, as PEFT does.
  bool upcast = a.device().is_cpu() && (a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16);
  at::Tensor ba = upcast ? at::matmul(b.to(at::kFloat), a.to(at::kFloat)) : at::matmul(b, a);
  at::Tensor delta = ((embedding_ || fan_in_fan_out_) ? ba.t() : ba) * scaling_.at(adapter);
  return delta.to(a.scalar_type());
}

void LoraLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  at::Tensor delta = delta_weight(adapter).to(w.scalar_type());
  if (!lora_magnitude_vector_->contains(adapter)) {
    w.add_(delta);
    return;
  }
  at::Tensor delta_out_in = fan_in_fan_out_ ? delta.t() : delta;
  at::Tensor norm = (weight_out_in() + delta_out_in).norm(2, {1}).detach();
  merged_weight_norm_[adapter] = norm;
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor factor = (magnitude / norm).view({-1, 1});
  if (fan_in_fan_out_) factor = factor.t();
  w.copy_(factor * (w + delta));
}

void LoraLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  at::Tensor delta = delta_weight(adapter).to(w.scalar_type());
  if (!lora_magnitude_vector_->contains(adapter)) {
    w.sub_(delta);
    return;
  }
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor factor = (magnitude / merged_weight_norm_.at(adapter)).view({-1, 1});
  if (fan_in_fan_out_) factor = factor.t();
  w.copy_(w / factor - delta);
  merged_weight_norm_.erase(adapter);
}

void LoraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
  merged_weight_norm_.erase(adapter);
}

}  // namespace peft4j::tuners
