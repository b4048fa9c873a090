// BEFT. Random state: PEFT draws the vector from the global generator (torch.randn) whatever init_weights says and
// zeroes it when init_weights is true; the same draw happens here, so later draws line up with PEFT's.
#include "peft4j/tuners/beft.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's BeftConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "BEFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"target_modules", nullptr}, {"modules_to_save", nullptr},
    {"init_weights", true}};

class BeftTuner : public WrappingTuner<BeftLayer> {
 public:
  // init_weights true: zero vectors, so the output is unchanged.
  BeftTuner() : WrappingTuner({"BEFT", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override { config_bool(config, "init_weights"); }

  void add(BeftLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_bool(ctx.config, "init_weights"), ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<BeftTuner>());

}  // namespace

BeftLayer::BeftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "BEFT", /*conv1d=*/false);
  beft_bias_ = register_module("beft_bias", std::make_shared<AdapterDict>());
}

void BeftLayer::add(const std::string& adapter, bool init_weights, bool initialise) {
  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor b;
  {
    at::NoGradGuard no_grad;
    b = at::randn({1, shape_.out_features}, at::kFloat);
    if (initialise && init_weights) b.zero_();
  }
  beft_bias_->put_parameter(adapter, b.to(weight.device(), weight.scalar_type()));
}

at::Tensor BeftLayer::apply(const at::Tensor&, const at::Tensor& result, const std::string& adapter) {
  return (result + bias(adapter).flatten()).to(result.scalar_type());
}

void BeftLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor b = linear_bias(*base_layer());
  b.add_(bias(adapter).squeeze().to(b.scalar_type()));
}

void BeftLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor b = linear_bias(*base_layer());
  b.sub_(bias(adapter).squeeze().to(b.scalar_type()));
}

}  // namespace peft4j::tuners
