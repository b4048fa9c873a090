// VeRA. Random state: the shared projections come from PEFT's own recipe, reproduced exactly — a CPU generator
// seeded with projection_prng_key draws vera_A then vera_B with kaiming-uniform bounds (gain √2, fan_in); libtorch
// 1.13's CPU generator gives the same numbers as torch 2.11 (checked bit for bit against the golden vera_A/vera_B).
// With save_projection true (the default) the projections are also saved and loaded as PEFT does; with false they
// are left out of saved adapters and regenerated from the key. λ_d's random init (init_weights false) uses the
// global generator, as PEFT's torch.randn does.
#include "peft4j/tuners/vera.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cctype>
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

class VeraTuner : public WrappingTuner<VeraLayer> {
 public:
  // init_weights true: λ_b = 0, so ΔW = 0.
  VeraTuner() : WrappingTuner({"VERA", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    draw_vera_projections(tuner_module, model, targets, ctx, "vera", config_int(ctx.config, "r"));
  }

 protected:
  void validate(nlohmann::json& config) const override { check_vera_config(config, "vera_dropout"); }

  void add(VeraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.shared.at("vera_A"), ctx.shared.at("vera_B"),
              ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<VeraTuner>());

// PEFT's vera _kaiming_init: U(-b, b) with b = √3 · √2 / √fan_in, fan_in = shape[1], drawn from `generator`.
at::Tensor kaiming(int64_t rows, int64_t cols, at::Generator& generator) {
  double bound = std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(static_cast<double>(cols));
  return at::empty({rows, cols}, at::kFloat).uniform_(-bound, bound, generator);
}

// The method's name in messages: its prefix upper-cased ("VERA", "PVERA").
std::string upper_case(std::string name) {
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace

void draw_vera_projections(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
                           InjectContext& ctx, const std::string& prefix, int64_t a_rows) {
  auto [out, in] = largest_target_shape(model, targets);
  const int64_t r = config_int(ctx.config, "r");
  auto generator =
      at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(ctx.config, "projection_prng_key")));
  at::Tensor a, b;
  {
    at::NoGradGuard no_grad;
    a = kaiming(a_rows, in, generator);
    b = kaiming(out, r, generator);
  }
  share_projections(tuner_module, model, targets, ctx, prefix, a, b);
}

void check_vera_config(const nlohmann::json& config, const std::string& dropout_field) {
  check_linear_method_config(config, /*has_bias=*/true, dropout_field);
  config_positive_int(config, "r");
  config_int(config, "projection_prng_key");
  config_bool(config, "save_projection");
  config_double(config, "d_initial");
  config_bool(config, "fan_in_fan_out");
  config_bool(config, "init_weights");
}

VeraLayer::VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : VeraLayer(std::move(base), std::move(state), "vera") {}

VeraLayer::VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                     const std::string& prefix)
    : LinearDeltaLayer(std::move(base), std::move(state), upper_case(prefix)), prefix_(prefix) {}

void VeraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config, const at::Tensor& A,
                    const at::Tensor& B, bool initialise) {
  const std::string type = config_string(config, "peft_type");
  if (r <= 0) fail(ErrorKind::InvalidArgument, type + " config field 'r' must be positive, got " + std::to_string(r));
  const int64_t d_size = lambda_d_size(r);
  if (A.size(1) < shape_.in_features || B.size(0) < shape_.out_features || A.size(0) < d_size || B.size(1) < r)
    fail(ErrorKind::InvalidArgument, type + " projections " + c10::str(A.sizes()) + "/" + c10::str(B.sizes()) +
                                         " are too small for a layer of " + std::to_string(shape_.in_features) +
                                         " -> " + std::to_string(shape_.out_features) + " at rank " + std::to_string(r));
  at::Tensor weight = linear_weight(*base_layer());
  auto options = weight.options();
  at::Tensor lambda_b, lambda_d;
  {
    at::NoGradGuard no_grad;
    lambda_b = at::ones({shape_.out_features}, options);
    lambda_d = at::randn({d_size}, at::kFloat).to(options.device(), options.dtype().toScalarType());
    if (initialise && config_bool(config, "init_weights")) {
      lambda_d.fill_(config_double(config, "d_initial"));
      lambda_b.zero_();
    }
  }
  lambda_b_->put_parameter(adapter, lambda_b);
  lambda_d_->put_parameter(adapter, lambda_d);
  A_[adapter] = A;
  B_[adapter] = B;
  r_[adapter] = r;
  dropout_[adapter] = config_double(config, prefix_ + "_dropout");
}

at::Tensor VeraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor lambda_d = lambda_d_->parameter(adapter);
  at::Tensor lambda_b = lambda_b_->parameter(adapter);
  at::Tensor a = A_.at(adapter).slice(1, 0, shape_.in_features).to(x.device());
  at::Tensor b = B_.at(adapter).slice(0, 0, shape_.out_features).to(x.device());
  at::Tensor input = x.to(lambda_d.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor out = result + lambda_b * at::linear(latent(lambda_d * at::linear(input, a), adapter), b);
  return out.to(result.scalar_type());
}

at::Tensor VeraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor a = A_.at(adapter);
  at::Tensor b = B_.at(adapter);
  at::Tensor lambda_d = lambda_d_->parameter(adapter);
  at::Tensor lambda_b = lambda_b_->parameter(adapter);
  const auto dtype = b.scalar_type();
  if (upcast_on_cpu(b)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
    lambda_d = lambda_d.to(at::kFloat);
    lambda_b = lambda_b.to(at::kFloat);
  }
  const int64_t rows = merged_rows(lambda_d.size(0));
  a = a.slice(0, 0, rows).slice(1, 0, shape_.in_features).to(lambda_d.device());
  b = b.slice(0, 0, shape_.out_features).to(lambda_d.device());
  at::Tensor delta = at::matmul(lambda_b.unsqueeze(-1) * b, lambda_d.slice(0, 0, rows).unsqueeze(-1) * a);
  if (shape_.fan_in_fan_out) delta = delta.t();
  return delta.to(dtype);
}

void VeraLayer::forget_adapter(const std::string& adapter) {
  A_.erase(adapter);
  B_.erase(adapter);
  r_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
