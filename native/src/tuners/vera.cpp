// VeRA. Random state: the shared projections come from PEFT's own recipe, reproduced exactly — a CPU generator
// seeded with projection_prng_key draws vera_A then vera_B with kaiming-uniform bounds (gain √2, fan_in); libtorch
// 1.13's CPU generator gives the same numbers as torch 2.11 (checked bit for bit against the golden vera_A/vera_B).
// With save_projection true (the default) the projections are also saved and loaded as PEFT does; with false they
// are left out of saved adapters and regenerated from the key. λ_d's random init (init_weights false) uses the
// global generator, as PEFT's torch.randn does.
#include "peft4j/tuners/vera.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's VeraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "VERA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 256}, {"target_modules", nullptr},
    {"projection_prng_key", 0}, {"save_projection", true}, {"vera_dropout", 0.0}, {"d_initial", 0.1},
    {"fan_in_fan_out", false}, {"bias", "none"}, {"modules_to_save", nullptr}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}};

// PEFT's vera _kaiming_init: U(-b, b) with b = √3 · √2 / √fan_in, fan_in = shape[1], drawn from `generator`.
at::Tensor kaiming(int64_t rows, int64_t cols, at::Generator& generator) {
  double bound = std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(static_cast<double>(cols));
  return at::empty({rows, cols}, at::kFloat).uniform_(-bound, bound, generator);
}

class VeraTuner : public WrappingTuner<VeraLayer> {
 public:
  // init_weights true: λ_b = 0, so ΔW = 0.
  VeraTuner() : WrappingTuner({"VERA", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

  // PEFT's _init_vera_A_vera_B: projections as large as the largest target, one pair per adapter.
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    auto [out, in] = largest_target_shape(model, targets);
    const int64_t r = config_int(ctx.config, "r");
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(ctx.config, "projection_prng_key")));
    at::Tensor a, b;
    {
      at::NoGradGuard no_grad;
      a = kaiming(r, in, generator);
      b = kaiming(out, r, generator);
    }
    share_projections(tuner_module, model, targets, ctx, "vera", a, b);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "vera_dropout");
    config_positive_int(config, "r");
    config_int(config, "projection_prng_key");
    config_bool(config, "save_projection");
    config_double(config, "d_initial");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
  }

  void add(VeraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.shared.at("vera_A"), ctx.shared.at("vera_B"),
              ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<VeraTuner>());

}  // namespace

VeraLayer::VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "VeRA") {}

void VeraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config, const at::Tensor& vera_A,
                    const at::Tensor& vera_B, bool initialise) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "VERA config field 'r' must be positive, got " + std::to_string(r));
  if (vera_A.size(1) < shape_.in_features || vera_B.size(0) < shape_.out_features || vera_A.size(0) < r)
    fail(ErrorKind::InvalidArgument, "VeRA projections " + c10::str(vera_A.sizes()) + "/" + c10::str(vera_B.sizes()) +
                                         " are too small for a layer of " + std::to_string(shape_.in_features) +
                                         " -> " + std::to_string(shape_.out_features) + " at rank " + std::to_string(r));
  at::Tensor weight = linear_weight(*base_layer());
  auto options = weight.options();
  at::Tensor lambda_b, lambda_d;
  {
    at::NoGradGuard no_grad;
    lambda_b = at::ones({shape_.out_features}, options);
    lambda_d = at::randn({r}, at::kFloat).to(options.device(), options.dtype().toScalarType());
    if (initialise && config_bool(config, "init_weights")) {
      lambda_d.fill_(config_double(config, "d_initial"));
      lambda_b.zero_();
    }
  }
  vera_lambda_b_->put_parameter(adapter, lambda_b);
  vera_lambda_d_->put_parameter(adapter, lambda_d);
  vera_A_[adapter] = vera_A;
  vera_B_[adapter] = vera_B;
  r_[adapter] = r;
  dropout_[adapter] = config_double(config, "vera_dropout");
}

at::Tensor VeraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor lambda_d = vera_lambda_d_->parameter(adapter);
  at::Tensor lambda_b = vera_lambda_b_->parameter(adapter);
  at::Tensor a = vera_A_.at(adapter).slice(1, 0, shape_.in_features).to(x.device());
  at::Tensor b = vera_B_.at(adapter).slice(0, 0, shape_.out_features).to(x.device());
  at::Tensor input = x.to(lambda_d.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor out = result + lambda_b * at::linear(lambda_d * at::linear(input, a), b);
  return out.to(result.scalar_type());
}

at::Tensor VeraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor a = vera_A_.at(adapter);
  at::Tensor b = vera_B_.at(adapter);
  at::Tensor lambda_d = vera_lambda_d_->parameter(adapter);
  at::Tensor lambda_b = vera_lambda_b_->parameter(adapter);
  const auto dtype = b.scalar_type();
  if (upcast_on_cpu(b)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
    lambda_d = lambda_d.to(at::kFloat);
    lambda_b = lambda_b.to(at::kFloat);
  }
  a = a.slice(1, 0, shape_.in_features).to(lambda_d.device());
  b = b.slice(0, 0, shape_.out_features).to(lambda_d.device());
  at::Tensor delta = at::matmul(lambda_b.unsqueeze(-1) * b, lambda_d.unsqueeze(-1) * a);
  if (shape_.fan_in_fan_out) delta = delta.t();
  return delta.to(dtype);
}

void VeraLayer::forget_adapter(const std::string& adapter) {
  vera_A_.erase(adapter);
  vera_B_.erase(adapter);
  r_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
