// (IA)^3. Random state: none derived from a seed. The vectors are trainable parameters saved with the adapter; a new
// adapter draws N(0, 1) from libtorch's default generator in f32 on the CPU as PEFT does (also when it then sets
// them to ones, so a given seed leaves the generator where PEFT's leaves it).
#include "peft4j/tuners/ia3.h"

#include <regex>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's IA3Config with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "IA3"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"feedforward_modules", nullptr}, {"fan_in_fan_out", false},
    {"modules_to_save", nullptr}, {"init_ia3_weights", true}};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// PEFT's _check_target_module_feedforward: a regex matches the whole key; a list entry matches any key ending with it
// (plain suffix, not a path component).
bool is_feedforward(const nlohmann::json& config, const std::string& key) {
  const auto& ff = config["feedforward_modules"];
  if (ff.is_string()) {
    try {
      return std::regex_match(key, std::regex(ff.get<std::string>()));
    } catch (const std::regex_error&) {
      fail(ErrorKind::InvalidArgument, "IA3 config field 'feedforward_modules' is not a valid regular expression: '" +
                                           ff.get<std::string>() + "'");
    }
  }
  auto names = config_strings(config, "feedforward_modules");
  for (const auto& name : *names)
    if (ends_with(key, name)) return true;
  return false;
}

class Ia3Tuner : public WrappingTuner<Ia3Layer> {
 public:
  Ia3Tuner() : WrappingTuner({"IA3", kDefaults, kLinear | kConv1D, {{"init_ia3_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    config_bool(config, "init_ia3_weights");
    config_bool(config, "fan_in_fan_out");
    for (const char* field : {"target_modules", "feedforward_modules"})
      if (config[field].is_null())
        fail(ErrorKind::InvalidArgument, std::string("IA3 config field '") + field +
                                             "' is required; peft4j does not fill PEFT's per-architecture defaults");
    auto targets = config_strings(config, "target_modules");
    auto feedforward = config_strings(config, "feedforward_modules");
    if (config["feedforward_modules"].is_string())
      is_feedforward(config, "");  // rejects a malformed regular expression now
    // PEFT checks this only when both are lists.
    if (config["target_modules"].is_array() && config["feedforward_modules"].is_array())
      for (const auto& name : *feedforward)
        if (!std::count(targets->begin(), targets->end(), name))
          fail(ErrorKind::InvalidArgument, "IA3 config field 'feedforward_modules' must be a subset of target_modules; '" +
                                               name + "' is not a target");
  }

  // As in PEFT, whether a layer scales its input is decided when it is first wrapped.
  std::shared_ptr<Ia3Layer> make_layer(const std::shared_ptr<torch::nn::Module>& target,
                                       const InjectContext& ctx) const override {
    return std::make_shared<Ia3Layer>(target, ctx.state, is_feedforward(ctx.config, ctx.key));
  }

  void add(Ia3Layer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_bool(ctx.config, "init_ia3_weights"), ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<Ia3Tuner>());

}  // namespace

Ia3Layer::Ia3Layer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state, bool is_feedforward)
    : AdapterLayer(base, std::move(state)), is_feedforward_(is_feedforward) {
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get())) {
    in_features_ = linear->weight.size(1);
    out_features_ = linear->weight.size(0);
  } else if (auto* conv = dynamic_cast<models::Conv1DImpl*>(base.get())) {
    // PEFT forces fan_in_fan_out on for Conv1D whatever the config says.
    fan_in_fan_out_ = true;
    in_features_ = conv->weight.size(0);
    out_features_ = conv->weight.size(1);
  } else {
    fail(ErrorKind::Unsupported, "IA3 wraps Linear and GPT-2's Conv1D layers only, not " + base->name());
  }
}

void Ia3Layer::add(const std::string& adapter, bool init_ia3_weights, bool initialise) {
  at::NoGradGuard no_grad;
  at::Tensor l = is_feedforward_ ? at::randn({1, in_features_}) : at::randn({out_features_, 1});
  if (initialise && init_ia3_weights) l.fill_(1.0);
  at::Tensor w = base_layer()->named_parameters(false)["weight"];
  ia3_l_->put_parameter(adapter, l.to(w.device(), w.scalar_type()));
}

at::Tensor Ia3Layer::scaled(const at::Tensor& x, const at::Tensor& result, const at::Tensor& scaling) {
  if (is_feedforward_) return base_forward((x.to(scaling.scalar_type()) * scaling).to(x.scalar_type()));
  return (result * scaling).to(result.scalar_type());
}

at::Tensor Ia3Layer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  return scaled(x, result, ia3_l_->parameter(adapter).flatten());
}

at::Tensor Ia3Layer::adapted_forward(const at::Tensor& x) {
  at::Tensor scaling;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) {
      at::Tensor l = ia3_l_->parameter(adapter).flatten();
      scaling = scaling.defined() ? scaling * l : l;
    }
  if (!scaling.defined()) return base_forward(x);
  return scaled(x, is_feedforward_ ? at::Tensor() : base_forward(x), scaling);
}

at::Tensor Ia3Layer::weight_factor(const std::string& adapter) const {
  at::Tensor l = ia3_l_->parameter(adapter).detach();
  return fan_in_fan_out_ ? l.t() : l;
}

// PEFT scales the weight (and, scaling outputs, the bias) by l, and unmerges by dividing by l + 1e-8: the round
// trip is exact only up to that tolerance.
void Ia3Layer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  auto params = base_layer()->named_parameters(false);
  at::Tensor w = params["weight"];
  w.copy_((w * weight_factor(adapter)).to(w.scalar_type()));
  const auto* bias = params.find("bias");
  if (!is_feedforward_ && bias && bias->defined())
    bias->copy_((*bias * ia3_l_->parameter(adapter).detach().reshape(bias->sizes())).to(bias->scalar_type()));
}

void Ia3Layer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  auto params = base_layer()->named_parameters(false);
  at::Tensor w = params["weight"];
  w.copy_((w / (weight_factor(adapter) + 1e-8)).to(w.scalar_type()));
  const auto* bias = params.find("bias");
  if (!is_feedforward_ && bias && bias->defined())
    bias->copy_((*bias / (ia3_l_->parameter(adapter).detach().reshape(bias->sizes()) + 1e-8)).to(bias->scalar_type()));
}

}  // namespace peft4j::tuners
