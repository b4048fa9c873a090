// PEANuT (arXiv 2410.01870) as PEFT 0.21 implements it: a weight-aware ΔW computed from the frozen base weight W
// [out, in] by a small network, ΔW = scaling · (B(g(f(Wᵀ·Aᵀ))))ᵀ with f the activation, g `depth` encoder layers then
// `depth` decoder layers with skip connections (all r × r, activation after each); Δh = x·ΔWᵀ, on Linear layers. ΔW
// is recomputed from W at every forward; merging computes it from the weight as it was before the first merge and
// unmerging restores that weight.
#pragma once

#include <map>
#include <string>

#include "peft4j/models/bert.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class PeanutLayer : public WeightDeltaLayer {
 public:
  PeanutLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "PEANUT"; }
  bool has_adapter(const std::string& adapter) const override { return depth_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  // ΔW [out, in] from the wrapped weight as it is now.
  at::Tensor delta_weight(const std::string& adapter) const override;
  // ΔW [out, in] computed from `weight` (the base weight before any merge, when merging).
  at::Tensor delta_from(const std::string& adapter, const at::Tensor& weight) const;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  LinearShape shape_;
  std::shared_ptr<AdapterDict> peanut_A_, peanut_B_, peanut_encoders_, peanut_decoders_;
  std::map<std::string, int64_t> depth_;
  std::map<std::string, double> scaling_;
  std::map<std::string, models::Activation> act_;
  at::Tensor weight_before_merge_;  // PEFT's _base_weight_before_merge: set by the first merge, kept until unmerged
};

}  // namespace peft4j::tuners
