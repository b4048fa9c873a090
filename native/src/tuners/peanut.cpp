// PEANuT. Random state: PEFT builds nn.Linear modules (each drawing its own kaiming init from the global generator)
// and then draws A, the encoders and decoders again (and B unless init_weights zeroes it); the same draws happen here
// in the same order. Nothing is derived from a seed: every weight is saved with the adapter.
#include "peft4j/tuners/peanut.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's PeanutConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "PEANUT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"depth", 0}, {"act_fn", "relu"},
    {"scaling", 1.0}, {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"modules_to_save", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"init_weights", true}};

const std::string kActFnField = "PEANUT config field 'act_fn'";

class PeanutTuner : public WrappingTuner<PeanutLayer> {
 public:
  // init_weights true: B = 0, so ΔW = 0.
  PeanutTuner() : WrappingTuner({"PEANUT", kDefaults, kLinear, {{"init_weights", true}}}) {}

  // PEFT keeps the encoders and decoders as ModuleDict[adapter] -> ModuleList, so their keys carry the adapter name
  // before the layer index ("peanut_encoders.default.0.weight"); the file drops it ("peanut_encoders.0.weight").
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    for (const char* container : {".peanut_encoders.", ".peanut_decoders."}) {
      const std::string marker = std::string(container) + adapter + ".";
      if (auto pos = model_key.find(marker); pos != std::string::npos)
        return model_key.substr(0, pos) + container + model_key.substr(pos + marker.size());
    }
    return Tuner::checkpoint_key(model_key, adapter);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    if (config_int(config, "depth") < 0)
      fail(ErrorKind::InvalidArgument, "PEANUT config field 'depth' must be a non-negative integer, got " +
                                           config["depth"].dump());
    models::activation_by_name(config_string(config, "act_fn"), kActFnField);
    config_double(config, "scaling");
    config_bool(config, "init_weights");
  }

  void add(PeanutLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter, ctx.config, ctx.initialise); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PeanutTuner>());

torch::nn::Linear linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); }

// nn.init.kaiming_uniform_(w, a=sqrt(5)), as PEFT draws every PEANuT weight (and nn.Linear its own).
void kaiming(at::Tensor& w) { torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0)); }

}  // namespace

PeanutLayer::PeanutLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "PEANUT", /*conv1d=*/false);
  peanut_A_ = register_module("peanut_A", std::make_shared<AdapterDict>());
  peanut_B_ = register_module("peanut_B", std::make_shared<AdapterDict>());
  peanut_encoders_ = register_module("peanut_encoders", std::make_shared<AdapterDict>());
  peanut_decoders_ = register_module("peanut_decoders", std::make_shared<AdapterDict>());
}

void PeanutLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  const int64_t r = config_int(config, "r"), depth = config_int(config, "depth"), out = shape_.out_features;
  at::Tensor weight = linear_weight(*base_layer());
  // A maps the weight's output dimension to r: it reads the columns of W, not the layer input.
  torch::nn::Linear a = linear(out, r);
  torch::nn::ModuleList encoders, decoders;
  for (int64_t i = 0; i < depth; ++i) encoders->push_back(linear(r, r));
  for (int64_t i = 0; i < depth; ++i) decoders->push_back(linear(r, r));
  torch::nn::Linear b = linear(r, out);
  if (initialise) {
    at::NoGradGuard no_grad;
    kaiming(a->weight);
    for (const auto& m : *encoders) kaiming(m->as<torch::nn::Linear>()->weight);
    for (const auto& m : *decoders) kaiming(m->as<torch::nn::Linear>()->weight);
    if (config_bool(config, "init_weights"))
      b->weight.zero_();
    else
      kaiming(b->weight);
  }
  a->to(weight.device(), weight.scalar_type());
  b->to(weight.device(), weight.scalar_type());
  encoders->to(weight.device(), weight.scalar_type());
  decoders->to(weight.device(), weight.scalar_type());
  peanut_A_->put_module(adapter, a.ptr());
  peanut_B_->put_module(adapter, b.ptr());
  peanut_encoders_->put_module(adapter, encoders.ptr());
  peanut_decoders_->put_module(adapter, decoders.ptr());
  depth_[adapter] = depth;
  scaling_[adapter] = config_double(config, "scaling");
  act_[adapter] = models::activation_by_name(config_string(config, "act_fn"), kActFnField);
}

// PEFT's _compute_delta_weight, operation for operation: Z = f(Wᵀ·Aᵀ) [in, r]; each encoder keeps its input for the
// skip connection; each decoder's output gets the matching encoder input added back (innermost first); then B.
at::Tensor PeanutLayer::delta_from(const std::string& adapter, const at::Tensor& weight) const {
  auto& a = peanut_A_->module(adapter).as<torch::nn::Linear>()->weight;
  const auto& f = act_.at(adapter);
  at::Tensor z = f(at::matmul(weight.t().to(a.scalar_type()), a.t()));
  std::vector<at::Tensor> residuals;
  for (const auto& m : *peanut_encoders_->module(adapter).as<torch::nn::ModuleList>()) {
    residuals.push_back(z);
    z = f(m->as<torch::nn::Linear>()->forward(z));
  }
  for (const auto& m : *peanut_decoders_->module(adapter).as<torch::nn::ModuleList>()) {
    z = f(m->as<torch::nn::Linear>()->forward(z)) + residuals.back();
    residuals.pop_back();
  }
  z = peanut_B_->module(adapter).as<torch::nn::Linear>()->forward(z);
  return (z * scaling_.at(adapter)).t();
}

at::Tensor PeanutLayer::delta_weight(const std::string& adapter) const { return delta_from(adapter, base_weight()); }

at::Tensor PeanutLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor delta = delta_weight(adapter);
  return result + at::matmul(x.to(delta.scalar_type()), delta.t()).to(result.scalar_type());
}

// Every merged adapter's ΔW comes from the weight before the first merge, as in PEFT.
void PeanutLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  if (!weight_before_merge_.defined()) weight_before_merge_ = w.detach().clone();
  w.add_(delta_from(adapter, weight_before_merge_).to(w.scalar_type()));
}

// PEFT restores the saved weight (rather than subtracting ΔW) and forgets it once nothing is merged.
void PeanutLayer::unmerge_adapter(const std::string&) {
  at::NoGradGuard no_grad;
  base_weight().copy_(weight_before_merge_);
  if (merged_.size() == 1) weight_before_merge_ = at::Tensor();
}

void PeanutLayer::forget_adapter(const std::string& adapter) {
  depth_.erase(adapter);
  scaling_.erase(adapter);
  act_.erase(adapter);
}

}  // namespace peft4j::tuners
