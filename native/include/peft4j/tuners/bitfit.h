// BitFit (Ben Zaken et al. 2022), peft_type "BITFIT" (a peft4j value): only bias terms are trained. Each module with a
// bias (Linear, GPT-2's Conv1D, LayerNorm; target_modules null = all of them) gets a per-adapter copy of its bias b_a,
// and the module's output becomes y − b + b_a, so several BitFit adapters, mixed batches and disabling work as for
// any tuner and the base stays frozen. A new adapter's copy equals the bias (the identity). A sequence classifier's
// head is trained whole (modules_to_save defaults to ["classifier"]), as in the paper. Trainable parameters: the
// model's bias count (+ the head's weight). Saved keys are the model's own, "base_model.model.<module>.bias", so an
// adapter holds only the trained tensors; merging writes b_a into the bias (unmerge restores it).
#pragma once

#include <map>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class BitFitLayer : public AdapterLayer {
 public:
  BitFitLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "BITFIT"; }
  bool has_adapter(const std::string& adapter) const override { return biases_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  void add(const std::string& adapter);
  at::Tensor bias(const std::string& adapter) const { return biases_->parameter(adapter); }

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override { merged_deltas_.erase(adapter); }

 private:
  at::Tensor base_bias() const;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> biases_ = adapter_dict("bitfit_bias");
  std::map<std::string, at::Tensor> merged_deltas_;  // b_a − b at merge time, taken out again by unmerge
};

// Whether `module` is a Linear, Conv1D or LayerNorm with a bias.
bool has_bias(const torch::nn::Module& module);

}  // namespace peft4j::tuners
