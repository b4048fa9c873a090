// PVeRA. Everything but the latent is VeRA's (vera.cpp): the projections come from the same recipe with pvera_A's
// 2r rows drawn first, λ_d's 2r values from the global generator. The noise ε is drawn per forward, in module order,
// from the adapter's generator (generator_seed) on CPU and moved to the latent's device, as PEFT does; libtorch
// 1.13's CPU normal sampler gives torch 2.11's numbers for the same seed.
#include "peft4j/tuners/pvera.h"

#include <ATen/CPUGeneratorImpl.h>

#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's PveraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "PVERA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 256}, {"target_modules", nullptr},
    {"projection_prng_key", 0}, {"save_projection", true}, {"pvera_dropout", 0.0}, {"d_initial", 0.1},
    {"fan_in_fan_out", false}, {"bias", "none"}, {"modules_to_save", nullptr}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"sample_at_inference", false},
    {"generator_seed", nullptr}};

class PveraTuner : public WrappingTuner<PveraLayer> {
 public:
  // init_weights true: λ_b = 0, so ΔW = 0 (and the sampled latent is multiplied by zero).
  PveraTuner() : WrappingTuner({"PVERA", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    draw_vera_projections(tuner_module, model, targets, ctx, "pvera", 2 * config_int(ctx.config, "r"));
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_vera_config(config, "pvera_dropout");
    config_bool(config, "sample_at_inference");
    config_optional_int(config, "generator_seed");
  }

  void add(PveraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.shared.at("pvera_A"), ctx.shared.at("pvera_B"),
              ctx.initialise);
    layer.set_sampling(ctx.adapter, config_bool(ctx.config, "sample_at_inference"),
                       config_optional_int(ctx.config, "generator_seed"));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PveraTuner>());

}  // namespace

PveraLayer::PveraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : VeraLayer(std::move(base), std::move(state), "pvera") {}

void PveraLayer::set_sampling(const std::string& adapter, bool sample_at_inference,
                              std::optional<int64_t> generator_seed) {
  sample_at_inference_[adapter] = sample_at_inference;
  generator_[adapter] = std::nullopt;
  if (generator_seed)
    generator_[adapter] = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(*generator_seed));
}

// PEFT's _reparametrize on the chunks of λ_d ⊙ (A x).
at::Tensor PveraLayer::latent(const at::Tensor& scaled, const std::string& adapter) {
  auto halves = scaled.chunk(2, -1);
  const at::Tensor& mu = halves[0];
  if (!is_training() && !sample_at_inference_.at(adapter)) return mu;
  at::Tensor std = at::exp(0.5 * halves[1]);
  const auto& generator = generator_.at(adapter);
  at::Tensor eps;
  {
    at::NoGradGuard no_grad;
    eps = generator ? at::randn(std.sizes(), *generator, std.options().device(at::kCPU)).to(std.device())
                    : at::randn_like(std);
  }
  return mu + eps * std;
}

void PveraLayer::forget_adapter(const std::string& adapter) {
  VeraLayer::forget_adapter(adapter);
  sample_at_inference_.erase(adapter);
  generator_.erase(adapter);
}

}  // namespace peft4j::tuners
