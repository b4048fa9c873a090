// RandLoRA. Random state: the shared bases come from PEFT's own recipe, reproduced exactly — a CPU generator seeded
// with projection_prng_key draws randlora_A then the n_bases slices of randlora_B, each kaiming-uniform (a = √5) in
// bfloat16 (PEFT draws them in bf16 wherever bf16 is available, which covers CPUs and current GPUs), each basis then
// divided by its bf16 standard deviation; sparse/very_sparse draw torch.rand and keep ternary values. libtorch
// 1.13's CPU generator and bf16 kernels give the same numbers as torch 2.11 (checked bit for bit against the golden
// bases). With save_projection true (the default) the bases are also saved and loaded as PEFT does; with false they
// are left out and regenerated. λ's random init (init_weights false) uses the global generator, as PEFT's
// torch.randn does.
#include "peft4j/tuners/randlora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's RandLoraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "RANDLORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"target_modules", nullptr},
    {"projection_prng_key", 0}, {"save_projection", true}, {"sparse", false}, {"very_sparse", false},
    {"randlora_dropout", 0.0}, {"fan_in_fan_out", false}, {"randlora_alpha", 640}, {"bias", "none"},
    {"modules_to_save", nullptr}, {"init_weights", true}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}};

int64_t bases_for(int64_t min_dim, int64_t r) { return (min_dim + r - 1) / r; }

// torch.nn.init.kaiming_uniform_(a=√5) on a fresh bf16 tensor: U(-b, b), b = √3 · √(2 / 6) / √fan_in, where
// fan_in = shape[1] · prod(shape[2:]).
at::Tensor kaiming_bf16(at::IntArrayRef shape, at::Generator& generator) {
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  double bound = std::sqrt(3.0) * std::sqrt(2.0 / 6.0) / std::sqrt(static_cast<double>(fan_in));
  return at::empty(shape, at::kBFloat16).uniform_(-bound, bound, generator);
}

// PEFT's _init_randlora_A_randlora_B_sparse: ternary bases, -1 / 0 / 1 with probability 1/(2s), 1 - 1/s, 1/(2s).
at::Tensor ternary(const at::Tensor& uniform, double sparsity) {
  at::Tensor out = at::zeros(uniform.sizes(), at::kFloat);
  out.masked_fill_(uniform < 1.0 / (2 * sparsity), -1);
  out.masked_fill_(uniform > 1.0 - 1.0 / (2 * sparsity), 1);
  return out;
}

class RandLoraTuner : public WrappingTuner<RandLoraLayer> {
 public:
  // init_weights true: λ = 0, so ΔW = 0.
  RandLoraTuner() : WrappingTuner({"RANDLORA", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

  // PEFT's _pre_injection_hook: bases as large as the largest target, one pair per adapter.
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    auto [out, in] = largest_target_shape(model, targets);
    const int64_t max_dim = std::max(out, in), min_dim = std::min(out, in);
    const int64_t r = config_int(ctx.config, "r");
    const int64_t n_bases = bases_for(min_dim, r);
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(ctx.config, "projection_prng_key")));
    at::Tensor a, b;
    {
      at::NoGradGuard no_grad;
      const bool very_sparse = config_bool(ctx.config, "very_sparse");
      if (very_sparse || config_bool(ctx.config, "sparse")) {
        const double sparsity = very_sparse ? std::sqrt(static_cast<double>(min_dim)) : 3.0;
        a = ternary(at::rand({r, 1, min_dim}, generator, at::kFloat), sparsity);
        b = ternary(at::rand({max_dim, n_bases, r}, generator, at::kFloat), sparsity);
      } else {
        a = kaiming_bf16({r, 1, min_dim}, generator);
        std::vector<at::Tensor> slices;
        for (int64_t i = 0; i < n_bases; ++i) slices.push_back(kaiming_bf16({max_dim, 1, r}, generator));
        b = at::cat(slices, 1);
      }
      a = a / a.std();
      b = b / b.std();
    }
    share_projections(tuner_module, model, targets, ctx, "randlora", a, b);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "randlora_dropout");
    config_positive_int(config, "r");
    config_int(config, "projection_prng_key");
    config_bool(config, "save_projection");
    config_bool(config, "sparse");
    config_bool(config, "very_sparse");
    config_double(config, "randlora_alpha");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
  }

  void add(RandLoraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.shared.at("randlora_A"),
              ctx.shared.at("randlora_B"), config_bool(ctx.config, "save_projection"), ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<RandLoraTuner>());

}  // namespace

RandLoraLayer::RandLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "RandLoRA") {}

void RandLoraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config,
                        const at::Tensor& randlora_A, const at::Tensor& randlora_B, bool persistent, bool initialise) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "RANDLORA config field 'r' must be positive, got " + std::to_string(r));
  const int64_t min_dim = std::min(shape_.in_features, shape_.out_features);
  const int64_t max_dim = std::max(shape_.in_features, shape_.out_features);
  const int64_t n_bases = bases_for(min_dim, r);
  if (randlora_B.size(0) < max_dim || randlora_A.size(-1) < min_dim || randlora_A.size(0) < r ||
      randlora_B.size(-1) < r || randlora_B.size(1) < n_bases)
    fail(ErrorKind::InvalidArgument, "RandLoRA bases " + c10::str(randlora_A.sizes()) + "/" +
                                         c10::str(randlora_B.sizes()) + " are too small for a layer of " +
                                         std::to_string(shape_.in_features) + " -> " +
                                         std::to_string(shape_.out_features) + " at rank " + std::to_string(r));
  auto options = linear_weight(*base_layer()).options();
  at::Tensor lambda, gamma;
  {
    at::NoGradGuard no_grad;
    lambda = at::randn({r, n_bases}, at::kFloat).to(options.device(), options.dtype().toScalarType());
    gamma = at::ones({n_bases, min_dim}, options) / static_cast<double>(max_dim);
    if (initialise && config_bool(config, "init_weights")) {
      lambda.zero_();
      // PEFT's reset divides by the larger side of γ itself, not of the layer.
      gamma.fill_(1.0 / static_cast<double>(std::max(n_bases, min_dim)));
    }
  }
  randlora_lambda_->put_parameter(adapter, lambda);
  randlora_gamma_->put_parameter(adapter, gamma);
  // PEFT's layers hold the tuner's BufferDicts themselves, so its files carry the bases under every layer's name
  // as well as at model level. A view shares the tuner's storage but is a tensor of its own, which the structural
  // rule saves per layer (it saves a tensor the tuner itself holds only once).
  randlora_A_->put_buffer(adapter, randlora_A.alias(), persistent);
  randlora_B_->put_buffer(adapter, randlora_B.alias(), persistent);
  r_[adapter] = r;
  num_bases_[adapter] = n_bases;
  scaling_[adapter] = config_double(config, "randlora_alpha") / static_cast<double>(r);
  dropout_[adapter] = config_double(config, "randlora_dropout");
}

std::pair<at::Tensor, at::Tensor> RandLoraLayer::scaled_bases(const std::string& adapter) const {
  at::Tensor a = randlora_A_->parameter(adapter);
  at::Tensor b = randlora_B_->parameter(adapter);
  at::Tensor lambda = randlora_lambda_->parameter(adapter);
  at::Tensor gamma = randlora_gamma_->parameter(adapter);
  if (upcast_on_cpu(b)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
    lambda = lambda.to(at::kFloat);
    gamma = gamma.to(at::kFloat);
  }
  const int64_t n_bases = num_bases_.at(adapter);
  const int64_t min_dim = std::min(shape_.in_features, shape_.out_features);
  const int64_t max_dim = std::max(shape_.in_features, shape_.out_features);
  at::Tensor sliced_a = a.slice(1, 0, n_bases).slice(2, 0, min_dim);
  at::Tensor sliced_b = b.slice(0, 0, max_dim).slice(1, 0, n_bases);
  at::Tensor update_b = sliced_b.flatten(1);  // [max_dim, n_bases · r]
  // PEFT's UniqueBaseGrad: λ and γ scale the one basis A; autograd gives the same gradients.
  at::Tensor update_a = (lambda.unsqueeze(2) * sliced_a * gamma.unsqueeze(0)).flatten(0, 1);  // [r · n_bases, min_dim]
  if (min_dim == shape_.in_features) return {update_a, update_b};
  return {update_b.t(), update_a.t()};
}

at::Tensor RandLoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  auto [first, second] = scaled_bases(adapter);
  at::Tensor input = x.to(second.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor out = result + at::linear(at::linear(input, first), second) * scaling_.at(adapter);
  return out.to(x.scalar_type());
}

at::Tensor RandLoraLayer::delta_weight(const std::string& adapter) const {
  auto [first, second] = scaled_bases(adapter);
  at::Tensor delta = at::matmul(second, first);  // [out, in]
  if (shape_.fan_in_fan_out) delta = delta.t();
  return delta * scaling_.at(adapter);
}

void RandLoraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  num_bases_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
