// AdapterBias. Random state: libtorch's default generator (α, and v when init_weights is false).
#include "peft4j/tuners/adapter_bias.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

const char* kType = "ADAPTER_BIAS";

const nlohmann::json kDefaults = {{"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr},
                                  {"revision", nullptr}, {"inference_mode", false}, {"target_modules", nullptr},
                                  {"modules_to_save", nullptr}, {"leave_out", nlohmann::json::array()},
                                  {"adapter_drop", false}, {"init_weights", true}};

class AdapterBiasTuner : public Tuner {
 public:
  std::string peft_type() const override { return kType; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    config_bool(config, "init_weights");
    config_bool(config, "adapter_drop");
    return config;
  }

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    config["target_modules"] = delta_targets(model, {Sublayer::FeedForward}, Insertion::Sequential,
                                             leave_out_layers(config, model, kType), kType);
    return config;
  }

  bool can_wrap(const torch::nn::Module& m) const override { return delta_can_wrap(m); }

  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>&,
               InjectContext& ctx) const override {
    prepare_adapter_drop(model, ctx);
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    auto module = std::make_shared<AdapterBiasModule>(delta_width(*target), config_bool(ctx.config, "init_weights"));
    return inject_delta(target, ctx, kType, module, Insertion::Sequential);
  }

  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    return delta_checkpoint_key(model_key, adapter);
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_weights"] = true;
    return identity;
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<AdapterBiasTuner>());

}  // namespace

AdapterBiasModule::AdapterBiasModule(int64_t width, bool identity) {
  at::NoGradGuard no_grad;
  double bound = 1.0 / std::sqrt(static_cast<double>(width));  // Linear(d_h, 1)'s Kaiming-uniform bound
  alpha = register_parameter("alpha", at::empty({width, 1}).uniform_(-bound, bound));
  v = register_parameter("v", identity ? at::zeros({1, width}) : at::empty({1, width}).uniform_(-bound, bound));
}

at::Tensor AdapterBiasModule::delta(const at::Tensor& z) {
  return at::matmul(at::matmul(z, alpha.to(z.scalar_type())), v.to(z.scalar_type()));
}

// The output map h -> h·M with M = I + αv (or its inverse), folded into the projection producing h.
void AdapterBiasModule::merge_into(torch::nn::Module& base, bool inverse) {
  at::NoGradGuard no_grad;
  at::Tensor a = alpha.detach().to(at::kDouble), b = v.detach().to(at::kDouble);
  at::Tensor eye = at::eye(a.size(0), a.options());
  at::Tensor m = inverse ? eye - at::matmul(a, b) / (1.0 + at::matmul(b, a)) : eye + at::matmul(a, b);
  auto params = base.named_parameters(false);
  at::Tensor w = params["weight"];
  if (dynamic_cast<models::Conv1DImpl*>(&base))
    w.copy_(at::matmul(w.to(at::kDouble), m));  // Conv1D: y = x·W + b, W [in, out]
  else if (dynamic_cast<torch::nn::LinearImpl*>(&base))
    w.copy_(at::matmul(m.t(), w.to(at::kDouble)));  // Linear: y = x·Wᵀ + b, W [out, in]
  else
    fail(ErrorKind::Unsupported, "ADAPTER_BIAS merges into a Linear or Conv1D projection, not " + base.name());
  if (const auto* bias = params.find("bias"); bias && bias->defined())
    bias->copy_(at::matmul(bias->to(at::kDouble).unsqueeze(0), m).squeeze(0));
}

}  // namespace peft4j::tuners
