// SHiRA. Random state: the mask positions are PEFT's random_mask, reproduced exactly — randperm(out·in) from a fresh
// CPU generator (seeded with random_seed, or torch's fixed default seed when it is null, so every layer of one shape
// gets the same mask, as in PEFT), first r·(in + out) entries, in row-major order. libtorch 1.13's CPU randperm
// gives the same permutation as torch 2.11 (checked against the golden shira_indices). PEFT also saves the positions
// ("<layer>.shira_indices") and a load takes them from the file, as here. The weights' random init (init_weights
// false) uses the global generator, as PEFT's torch.randn does.
#include "peft4j/tuners/shira.h"

#include <ATen/CPUGeneratorImpl.h>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's ShiraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "SHIRA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"mask_type", "random"},
    {"random_seed", nullptr}, {"target_modules", nullptr}, {"fan_in_fan_out", false}, {"init_weights", true},
    {"modules_to_save", nullptr}};

class ShiraTuner : public WrappingTuner<ShiraLayer> {
 public:
  // init_weights true: zero weights, so ΔW = 0.
  ShiraTuner() : WrappingTuner({"SHIRA", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/false);
    config_positive_int(config, "r");
    // Other mask types need a Python mask function PEFT takes from code, not from the config.
    std::string mask_type = config_string(config, "mask_type");
    if (mask_type != "random")
      fail(ErrorKind::Unsupported, "SHIRA config field 'mask_type' = \"" + mask_type +
                                       "\" is not supported by peft4j (\"random\"; custom mask functions are Python code)");
    config_optional_int(config, "random_seed");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
  }

  void add(ShiraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<ShiraTuner>());

}  // namespace

ShiraLayer::ShiraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "SHiRA", /*conv1d=*/false) {}

void ShiraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise) {
  const int64_t in = shape_.in_features, out = shape_.out_features;
  const int64_t count = r * (in + out);
  if (r <= 0 || count > in * out)
    fail(ErrorKind::InvalidArgument, "SHIRA config field 'r' = " + std::to_string(r) + " gives " +
                                         std::to_string(count) + " SHiRA weights, more than the layer's " +
                                         std::to_string(in * out));
  at::Tensor weight = linear_weight(*base_layer());
  auto generator = config["random_seed"].is_null()
                       ? at::make_generator<at::CPUGeneratorImpl>()
                       : at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(config, "random_seed")));
  at::Tensor chosen = std::get<0>(at::randperm(in * out, generator, at::kLong).slice(0, 0, count).sort());
  at::Tensor indices =
      at::stack({at::div(chosen, in, "floor"), at::remainder(chosen, in)}).to(at::kInt).to(weight.device());
  at::Tensor values;
  {
    at::NoGradGuard no_grad;
    values = (initialise && config_bool(config, "init_weights") ? at::zeros({count}, at::kFloat)
                                                                       : at::randn({count}, at::kFloat))
                 .to(weight.device(), weight.scalar_type());
  }
  shira_weight_->put_parameter(adapter, values);
  shira_indices_->put_buffer(adapter, indices);
  r_[adapter] = r;
  scaling_[adapter] = 1.0;
}

at::Tensor ShiraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor values = shira_weight_->parameter(adapter);
  at::Tensor index = shira_indices_->parameter(adapter).to(values.device(), at::kLong);
  at::Tensor dense = at::zeros({shape_.out_features, shape_.in_features}, values.options());
  // PEFT builds a sparse COO tensor, whose repeated positions add up: accumulate does the same.
  return dense.index_put_({index[0], index[1]}, values * scaling_.at(adapter), /*accumulate=*/true);
}

at::Tensor ShiraLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor weight = linear_weight(*base_layer()).clone();
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) weight = weight + delta_weight(adapter);
  at::Tensor bias = linear_bias(*base_layer());
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

at::Tensor ShiraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  return result + at::linear(x, delta_weight(adapter).to(x.scalar_type()));
}

void ShiraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  scaling_.erase(adapter);
}

}  // namespace peft4j::tuners
