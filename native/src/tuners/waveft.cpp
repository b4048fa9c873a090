// WaveFT. Random state: PEFT saves only the coefficients, not where they sit; it recomputes the positions on every
// load from random_loc_seed (seeded_locations: randperm(out·in), first n). The coefficients' random init
// (init_weights false: N(0, 1)·0.01) uses the global generator, as PEFT's torch.randn does.
#include "peft4j/tuners/waveft.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/wavelet.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's WaveFTConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "WAVEFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"n_frequency", 2592}, {"scaling", 25.0},
    {"wavelet_family", "db1"}, {"use_idwt", true}, {"random_loc_seed", 777}, {"fan_in_fan_out", false},
    {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"bias", "none"}, {"modules_to_save", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"n_frequency_pattern", nlohmann::json::object()},
    {"proportional_parameters", false}, {"init_weights", true}};

// The families PEFT's config accepts (its WAVELET_REDUCTIONS table): db1–db38, sym2–sym20, coif1–coif17.
bool known_family(const std::string& family) {
  for (const auto& [prefix, first, last] : {std::tuple<std::string, int, int>{"db", 1, 38}, {"sym", 2, 20}, {"coif", 1, 17}})
    for (int i = first; i <= last; ++i)
      if (family == prefix + std::to_string(i)) return true;
  return false;
}

// Python's round(): to the nearest integer, halves to the even one.
int64_t round_half_even(double v) {
  const double floor = std::floor(v), fraction = v - floor;
  const auto down = static_cast<int64_t>(floor);
  if (fraction < 0.5) return down;
  if (fraction > 0.5) return down + 1;
  return down % 2 == 0 ? down : down + 1;
}

// The proportional n_frequency of each target travels from prepare() to add() under this prefix of ctx.shared.
const std::string kProportional = "n_frequency:";

class WaveFTTuner : public WrappingTuner<WaveFTLayer> {
 public:
  // init_weights true: zero coefficients, so ΔW = 0.
  WaveFTTuner() : WrappingTuner({"WAVEFT", kDefaults, kLinear | kConv1D, {{"init_weights", true}}}) {}

  // proportional_parameters: PEFT's _calculate_proportional_parameters — a budget of n_frequency per target, shared
  // out by each target's in·out over the sum, round() half to even as Python's, at least 1.
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    if (!config_bool(ctx.config, "proportional_parameters")) return;
    int64_t total = 0;
    for (const auto& key : targets) {
      auto shape = wrapped_linear_shape(*module_at(model, key), "WAVEFT");
      total += shape.in_features * shape.out_features;
    }
    const double budget = static_cast<double>(config_int(ctx.config, "n_frequency") * static_cast<int64_t>(targets.size()));
    for (const auto& key : targets) {
      auto shape = wrapped_linear_shape(*module_at(model, key), "WAVEFT");
      const double ratio = static_cast<double>(shape.in_features * shape.out_features) / static_cast<double>(total);
      ctx.shared[kProportional + key] = at::scalar_tensor(std::max<int64_t>(1, round_half_even(ratio * budget)), at::kLong);
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true);
    config_positive_int(config, "n_frequency");
    config_double(config, "scaling");
    config_int(config, "random_loc_seed");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "proportional_parameters");
    config_bool(config, "init_weights");
    check_pattern(config, "n_frequency_pattern", /*positive_ints=*/true);
    for (const char* field : {"layers_to_transform", "layers_pattern"})
      if (config["target_modules"].is_string() && !config[field].is_null())
        fail(ErrorKind::InvalidArgument, std::string("WAVEFT config field '") + field +
                                             "' cannot be used when 'target_modules' is a regular expression (a string)");
    const std::string family = config_string(config, "wavelet_family");
    if (!known_family(family))
      fail(ErrorKind::InvalidArgument, "WAVEFT config field 'wavelet_family' = \"" + family +
                                           "\" is not a wavelet family PEFT supports (db1-db38, sym2-sym20, coif1-coif17)");
    // PEFT's config takes these, but its filter table stops at db10, sym10 and coif5, and its coif5 entry is malformed
    // (48 numbers), so PEFT's first forward fails for all of them.
    if (config_bool(config, "use_idwt") && !wavelet::filter_length(family))
      fail(ErrorKind::InvalidArgument, "WAVEFT config field 'wavelet_family' = \"" + family +
                                           "\": PEFT 0.21's inverse DWT cannot run with it (its filters cover db1-db10, "
                                           "sym2-sym10 and coif1-coif5, and its coif5 entry is malformed); use db1-db10, "
                                           "sym2-sym10, coif1-coif4, or use_idwt false");
  }

  void add(WaveFTLayer& layer, const InjectContext& ctx) const override {
    int64_t n_frequency = 0;
    if (config_bool(ctx.config, "proportional_parameters"))
      n_frequency = ctx.shared.at(kProportional + ctx.key).item<int64_t>();
    else
      n_frequency = pattern_int(ctx.config, "n_frequency_pattern", ctx.key, "n_frequency");
    layer.add(ctx.adapter, n_frequency, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<WaveFTTuner>());

}  // namespace

WaveFTLayer::WaveFTLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : DenseDeltaLayer(std::move(base), std::move(state), "WAVEFT") {}

void WaveFTLayer::add(const std::string& adapter, int64_t n_frequency, const nlohmann::json& config, bool initialise) {
  const int64_t entries = shape_.in_features * shape_.out_features;
  if (n_frequency <= 0 || n_frequency > entries)
    fail(ErrorKind::InvalidArgument, "WAVEFT config field 'n_frequency' = " + std::to_string(n_frequency) +
                                         " must be in [1, in_features × out_features = " + std::to_string(entries) + "]");
  at::Tensor weight = linear_weight(*base_layer());
  indices_[adapter] = seeded_locations(shape_.out_features, shape_.in_features, n_frequency,
                                       config_int(config, "random_loc_seed"))
                          .to(weight.device());
  at::Tensor spectrum;
  {
    at::NoGradGuard no_grad;
    const bool zeros = !initialise || config_bool(config, "init_weights");
    spectrum = zeros ? at::zeros({n_frequency}, at::kFloat) : at::randn({n_frequency}, at::kFloat) * 0.01;
  }
  waveft_spectrum_->put_parameter(adapter, spectrum.to(weight.device(), weight.scalar_type()));
  settings_[adapter] = {n_frequency, config_double(config, "scaling"), config_string(config, "wavelet_family"),
                        config_bool(config, "use_idwt")};
}

// PEFT's get_delta_weight. Low-precision CPU coefficients are computed in f32 (CPU bf16 convolutions are slow).
at::Tensor WaveFTLayer::delta_out_in(const std::string& adapter) const {
  const Settings& s = settings_.at(adapter);
  at::Tensor spectrum = waveft_spectrum_->parameter(adapter);
  const at::ScalarType dtype = upcast_on_cpu(spectrum) ? at::kFloat : spectrum.scalar_type();
  at::Tensor index = indices_.at(adapter).to(spectrum.device());
  const int64_t out = shape_.out_features, in = shape_.in_features;
  if (!s.use_idwt) {
    at::Tensor dense = at::zeros({out, in}, spectrum.options().dtype(dtype));
    dense.index_put_({index[0], index[1]}, spectrum.to(dtype));
    return (dense * s.scaling).to(spectrum.scalar_type());
  }
  // Padded by the filter's shrinkage (L - 2, PEFT's WAVELET_REDUCTIONS) to even sizes, the coefficients centred.
  const int64_t reduction = *wavelet::filter_length(s.wavelet_family) - 2;
  const int64_t rows = (out + reduction + 1) / 2 * 2, cols = (in + reduction + 1) / 2 * 2;
  at::Tensor dense = at::zeros({rows, cols}, spectrum.options().dtype(dtype));
  dense.index_put_({index[0] + (rows - out) / 2, index[1] + (cols - in) / 2}, spectrum.to(dtype));
  const int64_t h = rows / 2, w = cols / 2;
  at::Tensor top = dense.slice(0, 0, h), bottom = dense.slice(0, h);
  at::Tensor delta = wavelet::waverec2d(top.slice(1, 0, w), top.slice(1, w), bottom.slice(1, 0, w), bottom.slice(1, w),
                                        s.wavelet_family) *
                     s.scaling;
  const int64_t r0 = (delta.size(0) - out) / 2, c0 = (delta.size(1) - in) / 2;
  return delta.slice(0, r0, r0 + out).slice(1, c0, c0 + in).to(spectrum.scalar_type());
}

void WaveFTLayer::forget_adapter(const std::string& adapter) {
  settings_.erase(adapter);
  indices_.erase(adapter);
}

}  // namespace peft4j::tuners
