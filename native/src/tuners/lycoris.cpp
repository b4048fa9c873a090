#include "peft4j/tuners/lycoris.h"

#include <torch/nn/init.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

LycorisLayer::LycorisLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                           const std::string& peft_type)
    : AdapterLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, peft_type + " wraps torch Linear layers only, not " + base->name());
  in_features_ = linear->weight.size(1);
  out_features_ = linear->weight.size(0);
}

at::Tensor LycorisLayer::base_weight() const { return base_layer()->named_parameters(false)["weight"]; }

void LycorisLayer::set_hyper(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                             bool rank_dropout_scale) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, peft_type() + " rank must be positive, got " + std::to_string(r));
  hyper_[adapter] = {r, alpha / static_cast<double>(r), config_double(config, "rank_dropout", 0.0),
                     config_double(config, "module_dropout", 0.0), rank_dropout_scale};
}

at::Tensor LycorisLayer::make_factor(at::IntArrayRef shape, const std::function<void(at::Tensor&)>& init) const {
  at::NoGradGuard no_grad;
  at::Tensor t = at::zeros(shape, at::TensorOptions().dtype(at::kFloat));
  init(t);
  at::Tensor w = base_weight();
  return t.to(w.device(), w.scalar_type());
}

at::Tensor LycorisLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const Hyper& h = hyper_.at(adapter);
  // PEFT draws the module-dropout coin on every training forward, even at probability 0, so the generator
  // advances as PEFT's does.
  if (is_training() && !(at::rand({1}).item<double>() > h.module_dropout)) return result;
  at::Tensor delta = delta_weight(adapter);
  if (is_training() && h.rank_dropout > 0) {
    // Whole rows of ΔW are dropped; the mask is drawn on the CPU as PEFT's torch.rand is.
    at::Tensor drop = (at::rand({delta.size(0)}) > h.rank_dropout).to(at::kFloat);
    if (h.rank_dropout_scale) drop = drop / drop.mean();
    delta = delta * drop.view({-1, 1}).to(delta.device(), delta.scalar_type());
  }
  return (result + at::linear(x.to(delta.scalar_type()), delta)).to(x.scalar_type());
}

void LycorisLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  w.add_(delta_weight(adapter).to(w.scalar_type()));
}

void LycorisLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  w.sub_(delta_weight(adapter).to(w.scalar_type()));
}

void LycorisLayer::forget_adapter(const std::string& adapter) { hyper_.erase(adapter); }

namespace lycoris {

namespace {

}  // namespace

void kaiming_uniform(at::Tensor& t) { torch::nn::init::kaiming_uniform_(t, std::sqrt(5.0)); }

nlohmann::json normalize(const nlohmann::json& input, const nlohmann::json& defaults, const std::string& type) {
  nlohmann::json config = with_defaults(input, defaults);
  const std::string field = type + " config field '";
  if (config_int(config, "r", 8) <= 0)
    fail(ErrorKind::InvalidArgument, field + "r' must be a positive integer, got " + config["r"].dump());
  config_double(config, "alpha", 8);
  for (const char* name : {"rank_dropout", "module_dropout"}) {
    double p = config_double(config, name, 0.0);
    if (p < 0 || p > 1)
      fail(ErrorKind::InvalidArgument, field + name + "' must be in [0, 1], got " + config[name].dump());
  }
  config_bool(config, "use_effective_conv2d", false);  // only Conv2d/Conv1d layers read it; peft4j wraps Linear
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    const auto& p = config[pattern];
    if (p.is_null()) {
      config[pattern] = nlohmann::json::object();
      continue;
    }
    if (!p.is_object()) fail(ErrorKind::InvalidArgument, field + pattern + "' must be an object, got " + p.dump());
    for (auto it = p.begin(); it != p.end(); ++it)
      if (!it.value().is_number() || (std::string(pattern) == "rank_pattern" && !it.value().is_number_integer()))
        fail(ErrorKind::InvalidArgument, field + pattern + "' entry '" + it.key() + "' must be " +
                                             (std::string(pattern) == "rank_pattern" ? "an integer" : "a number") +
                                             ", got " + it.value().dump());
  }
  for (auto it = config["rank_pattern"].begin(); it != config["rank_pattern"].end(); ++it)
    if (it.value().get<int64_t>() <= 0)
      fail(ErrorKind::InvalidArgument, field + "rank_pattern' entry '" + it.key() + "' must be positive, got " +
                                           it.value().dump());
  require_target_modules(config);
  return config;
}

std::pair<int64_t, double> rank_and_alpha(const nlohmann::json& config, const std::string& key) {
  int64_t r = config_int(config, "r", 8);
  double alpha = config_double(config, "alpha", 8);
  if (auto k = pattern_key(config["rank_pattern"], key)) r = config["rank_pattern"][*k].get<int64_t>();
  if (auto k = pattern_key(config["alpha_pattern"], key)) alpha = config["alpha_pattern"][*k].get<double>();
  return {r, alpha};
}

}  // namespace lycoris

}  // namespace peft4j::tuners
