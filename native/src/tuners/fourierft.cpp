// FourierFT. Random state: PEFT saves only the spectrum, not which frequencies it sits at; it recomputes them on
// every load as randperm(out·in) from a CPU generator seeded with random_loc_seed, first n_frequency entries. We do
// the same (seeded_locations). The spectrum's random init (init_weights false) uses the global generator, as PEFT's
// torch.randn does.
#include "peft4j/tuners/fourierft.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's FourierFTConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "FOURIERFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"n_frequency", 1000}, {"scaling", 150.0},
    {"random_loc_seed", 777}, {"fan_in_fan_out", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"bias", "none"}, {"modules_to_save", nullptr}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
    {"n_frequency_pattern", nlohmann::json::object()}, {"init_weights", false}};

class FourierFTTuner : public WrappingTuner<FourierFTLayer> {
 public:
  // init_weights true: a zero spectrum, so ΔW = 0.
  FourierFTTuner() : WrappingTuner({"FOURIERFT", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true);
    config_positive_int(config, "n_frequency");
    config_int(config, "random_loc_seed");
    config_double(config, "scaling");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
    check_pattern(config, "n_frequency_pattern", /*positive_ints=*/true);
  }

  void add(FourierFTLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, pattern_int(ctx.config, "n_frequency_pattern", ctx.key, "n_frequency"), ctx.config,
              ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<FourierFTTuner>());

}  // namespace

FourierFTLayer::FourierFTLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : DenseDeltaLayer(std::move(base), std::move(state), "FourierFT") {}

void FourierFTLayer::add(const std::string& adapter, int64_t n_frequency, const nlohmann::json& config,
                         bool initialise) {
  const int64_t entries = shape_.in_features * shape_.out_features;
  if (n_frequency <= 0 || n_frequency > entries)
    fail(ErrorKind::InvalidArgument, "FOURIERFT config field 'n_frequency' = " + std::to_string(n_frequency) +
                                         " must be in [1, in_features × out_features = " + std::to_string(entries) + "]");
  at::Tensor weight = linear_weight(*base_layer());
  indices_[adapter] = seeded_locations(shape_.out_features, shape_.in_features, n_frequency,
                                       config_int(config, "random_loc_seed"))
                          .to(weight.device());
  at::Tensor spectrum;
  {
    at::NoGradGuard no_grad;
    spectrum = at::randn({n_frequency}, at::kFloat).to(weight.device(), weight.scalar_type());
    if (initialise && config_bool(config, "init_weights")) spectrum.zero_();
  }
  fourierft_spectrum_->put_parameter(adapter, spectrum);
  n_frequency_[adapter] = n_frequency;
  scaling_[adapter] = config_double(config, "scaling");
}

// The spectrum is scattered into a dense f32 [out, in] matrix (ifft2 has no f16/bf16 kernels) and transformed back.
at::Tensor FourierFTLayer::delta_out_in(const std::string& adapter) const {
  at::Tensor spectrum = fourierft_spectrum_->parameter(adapter);
  at::Tensor index = indices_.at(adapter).to(spectrum.device());
  at::Tensor dense = at::zeros({shape_.out_features, shape_.in_features}, spectrum.options().dtype(at::kFloat));
  dense.index_put_({index[0], index[1]}, spectrum.to(at::kFloat));
  at::Tensor delta = at::real(at::fft_ifft2(dense)) * scaling_.at(adapter);
  return delta.to(spectrum.scalar_type());
}

void FourierFTLayer::forget_adapter(const std::string& adapter) {
  n_frequency_.erase(adapter);
  scaling_.erase(adapter);
  indices_.erase(adapter);
}

}  // namespace peft4j::tuners
