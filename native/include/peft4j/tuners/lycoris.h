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

#include "peft4j/tuners/target_check.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LycorisLayer : public AdapterLayer {
 public:
  // Wraps a torch Linear; any other module is Error(Unsupported) naming `peft_type`.
  LycorisLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
               const std::string& peft_type);

  bool has_adapter(const std::string& adapter) const override { return hyper_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // ΔW as [out, in], alpha / r included, without rank dropout.
  virtual at::Tensor delta_weight(const std::string& adapter) const = 0;
  int64_t rank(const std::string& adapter) const { return hyper_.at(adapter).r; }
  double scaling(const std::string& adapter) const { return hyper_.at(adapter).scaling; }

 protected:
  // Records the adapter's hyper-parameters from the normalised config; `rank_dropout_scale` says whether the kept
  // rows are rescaled by 1 / their mean (LoHa always, LoKr when its config asks).
  void set_hyper(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                 bool rank_dropout_scale);
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
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
  at::Tensor base_weight() const;
  std::map<std::string, Hyper> hyper_;
};

namespace lycoris {

// PEFT's nn.init.kaiming_uniform_(t, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void kaiming_uniform(at::Tensor& t);

// The fields LoHa and LoKr share, checked by name (r, alpha, rank_dropout, module_dropout, rank_pattern,
// alpha_pattern, layers_pattern, target_modules) after `defaults` filled the absent ones.
nlohmann::json normalize(const nlohmann::json& config, const nlohmann::json& defaults, const std::string& peft_type);

// r and alpha for the module at `key`, rank_pattern / alpha_pattern applied.
std::pair<int64_t, double> rank_and_alpha(const nlohmann::json& config, const std::string& key);

// The Tuner behaviour LoHa and LoKr share: they wrap nn.Linear layers (or extend their own layer), size each adapter
// from r/alpha and their patterns, and start as the identity with init_weights true. `Layer` is the method's layer.
template <typename Layer>
class Tuner : public tuners::Tuner {
 public:
  bool can_wrap(const torch::nn::Module& m) const override {
    return dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const Layer*>(&m);
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    require_wrappable_targets(*this, config, model, "torch Linear layers");
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    auto layer = std::dynamic_pointer_cast<Layer>(target);
    if (!layer) layer = std::make_shared<Layer>(target, ctx.state);
    auto [r, alpha] = rank_and_alpha(ctx.config, ctx.key);
    layer->add(ctx.adapter, r, alpha, ctx.config, ctx.initialise);
    return layer;
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_weights"] = true;
    return identity;
  }
};

}  // namespace lycoris

}  // namespace peft4j::tuners
