// GraLoRA. Random state: the k block pairs are drawn from the global generator in PEFT's order (A_0, B_0, A_1, ...,
// kaiming-uniform a = √5; B zero with init_weights true), then the hybrid LoRA pair (built as nn.Linear, which draws
// its own init first, then re-drawn as PEFT does).
#include "peft4j/tuners/gralora.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's GraloraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "GRALORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"hybrid_r", 0}, {"target_modules", nullptr},
    {"alpha", 64}, {"gralora_dropout", 0.0}, {"gralora_k", 2}, {"fan_in_fan_out", false}, {"bias", "none"},
    {"modules_to_save", nullptr}, {"init_weights", true}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}};

class GraloraTuner : public WrappingTuner<GraloraLayer> {
 public:
  // init_weights true: every B is zero, so ΔW = 0.
  GraloraTuner() : WrappingTuner({"GRALORA", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "gralora_dropout");
    const int64_t r = config_positive_int(config, "r");
    const int64_t k = config_positive_int(config, "gralora_k");
    if (r % k != 0)
      fail(ErrorKind::InvalidArgument, "GRALORA config field 'r' (" + std::to_string(r) +
                                           ") must be divisible by 'gralora_k' (" + std::to_string(k) + ")");
    if (config_int(config, "hybrid_r") < 0)
      fail(ErrorKind::InvalidArgument, "GRALORA config field 'hybrid_r' must be >= 0, got " + config["hybrid_r"].dump());
    config_double(config, "alpha");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
  }

  void add(GraloraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<GraloraTuner>());

void kaiming(at::Tensor& t) { torch::nn::init::kaiming_uniform_(t, std::sqrt(5.0)); }

}  // namespace

GraloraLayer::GraloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "GraLoRA");
  gralora_A_ = register_module("gralora_A", std::make_shared<AdapterDict>());
  gralora_B_ = register_module("gralora_B", std::make_shared<AdapterDict>());
  gralora_A_general_ = register_module("gralora_A_general", std::make_shared<AdapterDict>());
  gralora_B_general_ = register_module("gralora_B_general", std::make_shared<AdapterDict>());
}

void GraloraLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  Settings s;
  s.r = config_int(config, "r");
  s.k = config_int(config, "gralora_k");
  s.hybrid_r = config_int(config, "hybrid_r");
  s.scaling = config_double(config, "alpha") / static_cast<double>(s.r + s.hybrid_r);
  s.dropout = config_double(config, "gralora_dropout");
  const int64_t in = shape_.in_features, out = shape_.out_features;
  for (const auto& [name, features] : {std::pair<const char*, int64_t>{"in_features", in}, {"out_features", out}})
    if (features % s.k != 0)
      fail(ErrorKind::InvalidArgument, std::string("GRALORA config field 'gralora_k' (") + std::to_string(s.k) +
                                           ") must divide the layer's " + name + " (" + std::to_string(features) + ")");
  const bool random_b = !config_bool(config, "init_weights");
  std::vector<at::Tensor> blocks_a, blocks_b;
  {
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < s.k; ++i) {
      at::Tensor a = at::zeros({s.r, in / s.k}, at::kFloat);
      at::Tensor b = at::zeros({out / s.k, s.r}, at::kFloat);
      if (initialise) {
        kaiming(a);
        if (random_b) kaiming(b);
      }
      blocks_a.push_back(a);
      blocks_b.push_back(b);
    }
  }
  auto options = linear_weight(*base_layer()).options().requires_grad(false);
  gralora_A_->put_parameter(adapter, at::stack(blocks_a).transpose(1, 2).contiguous().to(options));  // [k, in/k, r]
  gralora_B_->put_parameter(adapter, at::stack(blocks_b).transpose(1, 2).contiguous().to(options));  // [k, r, out/k]
  if (s.hybrid_r > 0) {
    torch::nn::Linear a(torch::nn::LinearOptions(in, s.hybrid_r).bias(false));
    torch::nn::Linear b(torch::nn::LinearOptions(s.hybrid_r, out).bias(false));
    {
      at::NoGradGuard no_grad;
      if (initialise) {
        kaiming(a->weight);
        if (random_b) {
          kaiming(b->weight);
        } else {
          b->weight.zero_();
        }
      }
    }
    a->to(options.device(), options.dtype().toScalarType());
    b->to(options.device(), options.dtype().toScalarType());
    gralora_A_general_->put_module(adapter, a.ptr());
    gralora_B_general_->put_module(adapter, b.ptr());
  }
  settings_[adapter] = s;
}

at::Tensor GraloraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const Settings& s = settings_.at(adapter);
  at::Tensor a = gralora_A_->parameter(adapter);
  at::Tensor b = gralora_B_->parameter(adapter);
  const int64_t k = s.k, in = shape_.in_features, out = shape_.out_features;
  at::Tensor input = x.to(a.scalar_type());
  at::Tensor dropped = s.dropout > 0 ? at::dropout(input, s.dropout, is_training()) : input;
  // Input block n through A_n, then output block j takes slice j of every block's result, in block order.
  at::Tensor h = at::einsum("tni,nir->tnr", {dropped.reshape({-1, k, in / k}), a});
  const int64_t tokens = h.size(0);
  h = h.reshape({tokens, k, k, s.r / k}).permute({0, 2, 1, 3}).reshape({tokens, k, s.r});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(out);
  at::Tensor update = at::einsum("tjr,jro->tjo", {h, b}).reshape(shape);
  at::Tensor adapted = result + (s.scaling * update).to(result.scalar_type());
  if (s.hybrid_r > 0) {
    // PEFT draws a second dropout mask for the hybrid part.
    at::Tensor hybrid_in = s.dropout > 0 ? at::dropout(input, s.dropout, is_training()) : input;
    at::Tensor hybrid = at::linear(at::linear(hybrid_in, gralora_A_general_->module(adapter).parameters()[0]),
                                   gralora_B_general_->module(adapter).parameters()[0]);
    adapted = adapted + (s.scaling * hybrid).to(result.scalar_type());
  }
  return adapted;
}

at::Tensor GraloraLayer::delta_weight(const std::string& adapter) const {
  const Settings& s = settings_.at(adapter);
  at::Tensor a = gralora_A_->parameter(adapter);
  at::Tensor b = gralora_B_->parameter(adapter);
  const auto dtype = a.scalar_type();
  const bool f32 = upcast_on_cpu(a);
  if (f32) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
  }
  const int64_t k = s.k, sub = s.r / k, in = shape_.in_features, out = shape_.out_features;
  // Block (n, j) of ΔWᵀ is A_n[:, j·sub:(j+1)·sub] · B_j[n·sub:(n+1)·sub, :].
  at::Tensor delta = at::einsum("nijs,jnso->nijo", {a.reshape({k, in / k, k, sub}), b.reshape({k, k, sub, out / k})})
                         .reshape({in, out})
                         .t();
  if (s.hybrid_r > 0) {
    at::Tensor general_a = gralora_A_general_->module(adapter).parameters()[0];
    at::Tensor general_b = gralora_B_general_->module(adapter).parameters()[0];
    if (f32) {
      general_a = general_a.to(at::kFloat);
      general_b = general_b.to(at::kFloat);
    }
    delta = delta + at::matmul(general_b, general_a);
  }
  if (shape_.fan_in_fan_out) delta = delta.t();
  return (delta * s.scaling).to(dtype);
}

void GraloraLayer::forget_adapter(const std::string& adapter) { settings_.erase(adapter); }

}  // namespace peft4j::tuners
