// What LoHa and LoKr share, as PEFT's lycoris_utils does: both add ΔW·x beside the wrapped Linear, where ΔW is
// built from the adapter's factors (Hadamard or Kronecker product) and scaled by alpha / r; both drop rows of ΔW
// (rank_dropout) and the whole adapter (module_dropout) at random in training; both merge by adding ΔW to the
// weight. The config fields they share (r, alpha, patterns, dropouts) are read and checked here.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>

#include <torch/nn/modules/linear.h>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LycorisLayer : public WeightDeltaLayer {
 public:
  // Wraps a torch Linear; any other module is Error(Unsupported) naming `peft_type`.
  LycorisLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
               const std::string& peft_type);

  bool has_adapter(const std::string& adapter) const override { return hyper_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

  // ΔW as [out, in], alpha / r included, without rank dropout.
  at::Tensor delta_weight(const std::string& adapter) const override = 0;
  int64_t rank(const std::string& adapter) const { return hyper_.at(adapter).r; }
  double scaling(const std::string& adapter) const { return hyper_.at(adapter).scaling; }

 protected:
  // Records the adapter's hyper-parameters from the normalised config; `rank_dropout_scale` says whether the kept
  // rows are rescaled by 1 / their mean (LoHa always, LoKr when its config asks).
  void set_hyper(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                 bool rank_dropout_scale);
  void forget_adapter(const std::string& adapter) override;

  // A new factor: created in f32 on the CPU, filled by `init`, then moved to the base weight's device and dtype, as
  // PEFT creates and initialises it before moving it, so a seed gives the same values as PEFT's on any device.
  at::Tensor make_factor(at::IntArrayRef shape, const std::function<void(at::Tensor&)>& init) const;

  int64_t in_features_ = 0;
  int64_t out_features_ = 0;

 private:
  struct Hyper {
    int64_t r;
    double scaling;
    double rank_dropout;
    double module_dropout;
    bool rank_dropout_scale;
  };
  std::map<std::string, Hyper> hyper_;
};

namespace lycoris {

// PEFT's nn.init.kaiming_uniform_(t, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void kaiming_uniform(at::Tensor& t);

// Checks the fields LoHa and LoKr share by name (r, alpha, rank_dropout, module_dropout, rank_pattern,
// alpha_pattern).
void validate(nlohmann::json& config);

// The Tuner LoHa and LoKr share: they wrap nn.Linear layers (or extend their own layer), size each adapter from
// r/alpha and their patterns, and start as the identity with init_weights true. `Layer` is the method's layer.
template <typename Layer>
class Tuner : public WrappingTuner<Layer> {
 public:
  Tuner(std::string peft_type, nlohmann::json defaults)
      : WrappingTuner<Layer>({std::move(peft_type), std::move(defaults), kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override { lycoris::validate(config); }

  void add(Layer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, pattern_int(ctx.config, "rank_pattern", ctx.key, "r"),
              pattern_double(ctx.config, "alpha_pattern", ctx.key, "alpha"), ctx.config, ctx.initialise);
  }
};

}  // namespace lycoris

}  // namespace peft4j::tuners
