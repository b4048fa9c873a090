// FourierFT. Random state: PEFT saves only the spectrum, not which frequencies it sits at; it recomputes them on
// every load as randperm(out·in) from a CPU generator seeded with random_loc_seed, first n_frequency entries. We do
// the same: libtorch 1.13's CPU randperm gives the same permutation as torch 2.11 (checked against torch 2.11 for
// 2048, 4096 and 100000 elements, and by this case's parity). The spectrum's random init (init_weights false) uses
// the global generator, as PEFT's torch.randn does.
#include "peft4j/tuners/fourierft.h"

#include <ATen/CPUGeneratorImpl.h>

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

class FourierFTTuner : public Tuner {
 public:
  std::string peft_type() const override { return "FOURIERFT"; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    check_linear_method_config(config, /*has_bias=*/true);
    if (config_int(config, "n_frequency", 1000) <= 0)
      fail(ErrorKind::InvalidArgument,
           "FOURIERFT config field 'n_frequency' must be a positive integer, got " + config["n_frequency"].dump());
    if (config["random_loc_seed"].is_null())
      fail(ErrorKind::InvalidArgument, "FOURIERFT config field 'random_loc_seed' must be an integer, got null");
    config_int(config, "random_loc_seed", 777);
    config_double(config, "scaling", 150.0);
    config_bool(config, "fan_in_fan_out", false);
    config_bool(config, "init_weights", false);
    const auto& pattern = config["n_frequency_pattern"];
    if (!pattern.is_object())
      fail(ErrorKind::InvalidArgument, "FOURIERFT config field 'n_frequency_pattern' must be an object");
    for (auto it = pattern.begin(); it != pattern.end(); ++it)
      if (!it.value().is_number_integer() || it.value().get<int64_t>() <= 0)
        fail(ErrorKind::InvalidArgument, "FOURIERFT config field 'n_frequency_pattern' entry '" + it.key() +
                                             "' must be a positive integer");
    return config;
  }

  bool can_wrap(const torch::nn::Module& m) const override {
    return dynamic_cast<const FourierFTLayer*>(&m) || (!dynamic_cast<const AdapterLayer*>(&m) && linear_shape(m));
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    auto layer = std::dynamic_pointer_cast<FourierFTLayer>(target);
    if (!layer) layer = std::make_shared<FourierFTLayer>(target, ctx.state);
    int64_t n = config_int(ctx.config, "n_frequency", 1000);
    if (auto key = pattern_key(ctx.config["n_frequency_pattern"], ctx.key))
      n = ctx.config["n_frequency_pattern"][*key].get<int64_t>();
    layer->add(ctx.adapter, n, ctx.config, ctx.initialise);
    return layer;
  }

  // init_weights true: a zero spectrum, so ΔW = 0.
  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_weights"] = true;
    return identity;
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<FourierFTTuner>());

}  // namespace

FourierFTLayer::FourierFTLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "FourierFT");
  fourierft_spectrum_ = register_module("fourierft_spectrum", std::make_shared<AdapterDict>());
}

void FourierFTLayer::add(const std::string& adapter, int64_t n_frequency, const nlohmann::json& config,
                         bool initialise) {
  const int64_t entries = shape_.in_features * shape_.out_features;
  if (n_frequency <= 0 || n_frequency > entries)
    fail(ErrorKind::InvalidArgument, "FOURIERFT config field 'n_frequency' = " + std::to_string(n_frequency) +
                                         " must be in [1, in_features × out_features = " + std::to_string(entries) + "]");
  at::Tensor weight = linear_weight(*base_layer());
  auto generator = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(config_int(config, "random_loc_seed", 777)));
  at::Tensor chosen = at::randperm(entries, generator, at::kLong).slice(0, 0, n_frequency);
  indices_[adapter] = at::stack({at::div(chosen, shape_.in_features, "floor"), at::remainder(chosen, shape_.in_features)})
                          .to(weight.device());
  at::Tensor spectrum;
  {
    at::NoGradGuard no_grad;
    spectrum = at::randn({n_frequency}, at::kFloat).to(weight.device(), weight.scalar_type());
    if (initialise && config_bool(config, "init_weights", false)) spectrum.zero_();
  }
  fourierft_spectrum_->put_parameter(adapter, spectrum);
  n_frequency_[adapter] = n_frequency;
  scaling_[adapter] = config_double(config, "scaling", 150.0);
}

// The spectrum is scattered into a dense f32 [out, in] matrix (ifft2 has no f16/bf16 kernels) and transformed back.
at::Tensor FourierFTLayer::delta_weight(const std::string& adapter) const {
  at::Tensor spectrum = fourierft_spectrum_->parameter(adapter);
  at::Tensor index = indices_.at(adapter).to(spectrum.device());
  at::Tensor dense = at::zeros({shape_.out_features, shape_.in_features}, spectrum.options().dtype(at::kFloat));
  dense.index_put_({index[0], index[1]}, spectrum.to(at::kFloat));
  at::Tensor delta = at::real(at::fft_ifft2(dense)) * scaling_.at(adapter);
  return delta.to(spectrum.scalar_type());
}

at::Tensor FourierFTLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor delta = delta_weight(adapter);
  return (result + at::linear(x.to(delta.scalar_type()), delta)).to(x.scalar_type());
}

void FourierFTLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = linear_weight(*base_layer());
  at::Tensor delta = delta_weight(adapter);
  w.add_((shape_.fan_in_fan_out ? delta.t() : delta).to(w.scalar_type()));
}

void FourierFTLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = linear_weight(*base_layer());
  at::Tensor delta = delta_weight(adapter);
  w.sub_((shape_.fan_in_fan_out ? delta.t() : delta).to(w.scalar_type()));
}

void FourierFTLayer::forget_adapter(const std::string& adapter) {
  n_frequency_.erase(adapter);
  scaling_.erase(adapter);
  indices_.erase(adapter);
}

at::Tensor FourierFTLayer::forward(const at::Tensor& x) {
  refuse_mixed_batch(*state_, peft_type());
  return AdapterLayer::forward(x);
}

}  // namespace peft4j::tuners
