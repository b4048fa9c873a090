#include "peft4j/tuners/lycoris.h"

#include <torch/nn/init.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

LycorisLayer::LycorisLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                           const std::string& peft_type)
    : WeightDeltaLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, peft_type + " wraps torch Linear layers only, not " + base->name());
  in_features_ = linear->weight.size(1);
  out_features_ = linear->weight.size(0);
}

void LycorisLayer::set_hyper(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                             bool rank_dropout_scale) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, peft_type() + " rank must be positive, got " + std::to_string(r));
  hyper_[adapter] = {r, alpha / static_cast<double>(r), config_double(config, "rank_dropout"),
                     config_double(config, "module_dropout"), rank_dropout_scale};
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

void LycorisLayer::forget_adapter(const std::string& adapter) { hyper_.erase(adapter); }

namespace lycoris {

void kaiming_uniform(at::Tensor& t) { torch::nn::init::kaiming_uniform_(t, std::sqrt(5.0)); }

void validate(nlohmann::json& config) {
  config_positive_int(config, "r");
  config_double(config, "alpha");
  config_probability(config, "rank_dropout", /*one_allowed=*/true);
  config_probability(config, "module_dropout", /*one_allowed=*/true);
  config_bool(config, "use_effective_conv2d");  // only Conv2d/Conv1d layers read it; peft4j wraps Linear
  check_pattern(config, "rank_pattern", /*positive_ints=*/true);
  check_pattern(config, "alpha_pattern", /*positive_ints=*/false);
}

}  // namespace lycoris

}  // namespace peft4j::tuners
