// GLoRA. Initialisation follows PEFT's per-path order (A, B, C, D, E) on the global generator: a "lora" path draws Xu
// kaiming-uniform (a = √5) and, unless init_weights, Xd too (else zeros); "vector" X kaiming-uniform or zeros;
// "constant" N(0, 0.02) or zero. With init_weights every path is zero, so W' = W and b' = b.
#include "peft4j/tuners/glora.h"

#include <torch/nn/modules/linear.h>

#include <cmath>

#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's GloraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "GLORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"target_modules", nullptr}, {"bias", "none"},
    {"modules_to_save", nullptr}, {"config_A_B", "lora"}, {"config_C", "lora"}, {"config_D_E", "constant"},
    {"init_weights", true}};

GloraPath::Kind kind_of(const std::string& name) {
  if (name == "lora") return GloraPath::Kind::Lora;
  if (name == "vector") return GloraPath::Kind::Vector;
  if (name == "constant") return GloraPath::Kind::Constant;
  return GloraPath::Kind::None;
}

// torch.nn.init.kaiming_uniform_(t, a=√5): U(-b, b), b = 1 / √fan_in with fan_in = size(1).
void kaiming_sqrt5(at::Tensor& t) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
  t.uniform_(-bound, bound);
}

class GloraTuner : public WrappingTuner<GloraLayer> {
 public:
  // init_weights true: every path starts at zero.
  GloraTuner() : WrappingTuner({"GLORA", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true);
    config_positive_int(config, "r");
    config_choice(config, "config_A_B", {"lora", "vector", "constant", "none"});
    config_choice(config, "config_C", {"lora", "vector", "none"});
    config_choice(config, "config_D_E", {"vector", "constant", "none"});
    config_bool(config, "init_weights");
  }

  void add(GloraLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter, ctx.config); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<GloraTuner>());

}  // namespace

GloraPath::GloraPath(Kind kind, int64_t rows, int64_t cols, int64_t r, bool column, bool init_weights) : kind_(kind) {
  at::NoGradGuard no_grad;
  switch (kind) {
    case Kind::Lora:
      Xd_ = at::zeros({rows, r});
      Xu_ = at::zeros({r, cols});
      kaiming_sqrt5(Xu_);
      if (!init_weights) kaiming_sqrt5(Xd_);
      Xd_ = register_parameter("Xd", Xd_);
      Xu_ = register_parameter("Xu", Xu_);
      break;
    case Kind::Vector: {
      X_ = column ? at::zeros({rows, 1}) : at::zeros({rows});
      if (!init_weights) {
        at::Tensor view = column ? X_ : X_.unsqueeze(0);
        kaiming_sqrt5(view);
      }
      X_ = register_parameter("X", X_);
      break;
    }
    case Kind::Constant:
      X_ = at::zeros({1});
      if (!init_weights) X_.normal_(0.0, 0.02);
      X_ = register_parameter("X", X_);
      break;
    case Kind::None:
      zeros_ = register_buffer("zeros", cols > 0 ? at::zeros({rows, cols}) : at::zeros({rows}));
      break;
  }
}

at::Tensor GloraPath::value() const {
  switch (kind_) {
    case Kind::Lora: return at::matmul(Xd_, Xu_);
    case Kind::Vector: return X_;
    case Kind::Constant: return X_[0];
    case Kind::None: break;
  }
  return zeros_;
}

GloraLayer::GloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  const auto shape = wrapped_linear_shape(*base, "GLORA", /*conv1d=*/false);
  in_features_ = shape.in_features;
  out_features_ = shape.out_features;
  glora_A_ = register_module("glora_A", std::make_shared<AdapterDict>());
  glora_B_ = register_module("glora_B", std::make_shared<AdapterDict>());
  glora_C_ = register_module("glora_C", std::make_shared<AdapterDict>());
  glora_D_ = register_module("glora_D", std::make_shared<AdapterDict>());
  glora_E_ = register_module("glora_E", std::make_shared<AdapterDict>());
}

void GloraLayer::add(const std::string& adapter, const nlohmann::json& config) {
  using Kind = GloraPath::Kind;
  const int64_t r = config_int(config, "r");
  const bool init = config_bool(config, "init_weights");
  const bool has_bias = linear_bias(*base_layer()).defined();
  const Kind ab = kind_of(config_string(config, "config_A_B"));
  const Kind c = has_bias ? kind_of(config_string(config, "config_C")) : Kind::None;
  const Kind de = has_bias ? kind_of(config_string(config, "config_D_E")) : Kind::None;
  const int64_t out = out_features_, in = in_features_;
  auto make = [&](Kind kind, int64_t rows, int64_t cols, bool column) {
    return std::make_shared<GloraPath>(kind, rows, cols, r, column, init);
  };
  std::vector<std::pair<std::shared_ptr<AdapterDict>, std::shared_ptr<GloraPath>>> paths = {
      {glora_A_, make(ab, out, ab == Kind::Vector ? 1 : in, true)},
      {glora_B_, make(ab, out, ab == Kind::Vector ? 1 : in, true)},
      {glora_C_, make(c, in, 1, true)},
      {glora_D_, make(de, out, 0, false)},
      {glora_E_, make(de, out, 0, false)}};
  at::Tensor weight = linear_weight(*base_layer());
  for (auto& [dict, module] : paths) {
    module->to(weight.device(), weight.scalar_type());
    dict->put_module(adapter, module);
  }
  adapters_.insert(adapter);
}

at::Tensor GloraLayer::path(const std::shared_ptr<AdapterDict>& dict, const std::string& adapter,
                            const at::Tensor& like) const {
  return static_cast<GloraPath&>(dict->module(adapter)).value().to(like.device(), like.scalar_type());
}

GloraLayer::Effective GloraLayer::effective(const std::string& adapter) const {
  at::Tensor W = linear_weight(*base_layer());
  at::Tensor b = linear_bias(*base_layer());
  Effective e;
  e.weight = W + W * path(glora_A_, adapter, W) + path(glora_B_, adapter, W);
  if (b.defined())
    e.bias = b + b * path(glora_D_, adapter, W) + path(glora_E_, adapter, W) +
             at::matmul(W, path(glora_C_, adapter, W)).squeeze(-1);
  return e;
}

at::Tensor GloraLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor base_result = base_forward(x);
  at::Tensor result = base_result;
  int64_t n = 0;
  for (const auto& adapter : state_->active) {
    if (!has_adapter(adapter)) continue;
    Effective e = effective(adapter);
    result = result + at::linear(x, e.weight, e.bias);
    ++n;
  }
  if (n > 0) result = result - static_cast<double>(n) * base_result;
  return result;
}

at::Tensor GloraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  Effective e = effective(adapter);
  return result + (at::linear(x, e.weight, e.bias) - result);
}

void GloraLayer::write_merged(const std::vector<std::string>& adapters) {
  at::NoGradGuard no_grad;
  at::Tensor W = linear_weight(*base_layer());
  at::Tensor b = linear_bias(*base_layer());
  at::Tensor w0 = W.clone(), b0 = b.defined() ? b.clone() : at::Tensor();
  for (const auto& adapter : adapters) {
    W.add_(w0 * path(glora_A_, adapter, w0) + path(glora_B_, adapter, w0));
    if (b.defined())
      b.add_(b0 * path(glora_D_, adapter, w0) + path(glora_E_, adapter, w0) +
             at::matmul(w0, path(glora_C_, adapter, w0)).squeeze(-1));
  }
}

void GloraLayer::merge(const std::vector<std::string>& adapters) {
  std::vector<std::string> all = merged_;
  if (!merged_.empty()) unmerge();
  for (const auto& adapter : adapters)
    if (has_adapter(adapter) && !std::count(all.begin(), all.end(), adapter)) all.push_back(adapter);
  write_merged(all);
  merged_ = all;
}

void GloraLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor W = linear_weight(*base_layer());
  at::Tensor b = linear_bias(*base_layer());
  at::Tensor sum_A = at::zeros_like(W), sum_B = at::zeros_like(W);
  for (const auto& name : merged_) {
    sum_A = sum_A + path(glora_A_, name, W);
    sum_B = sum_B + path(glora_B_, name, W);
  }
  at::Tensor w0 = (W - sum_B) / (1.0 + sum_A);
  if (b.defined()) {
    at::Tensor sum_D = at::zeros_like(b), sum_E = at::zeros_like(b), sum_WC = at::zeros_like(b);
    for (const auto& name : merged_) {
      sum_D = sum_D + path(glora_D_, name, W);
      sum_E = sum_E + path(glora_E_, name, W);
      sum_WC = sum_WC + at::matmul(w0, path(glora_C_, name, W)).squeeze(-1);
    }
    b.copy_((b - sum_E - sum_WC) / (1.0 + sum_D));
  }
  W.copy_(w0);
  std::vector<std::string> remaining;
  for (const auto& name : merged_)
    if (name != adapter) remaining.push_back(name);
  if (!remaining.empty()) write_merged(remaining);
}

}  // namespace peft4j::tuners
