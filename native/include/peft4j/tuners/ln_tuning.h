// LN tuning (Zhao et al. 2023) as PEFT 0.21 implements it: each targeted module (normally a LayerNorm/RMSNorm)
// gets a trainable copy per adapter, and the active adapter's copy replaces the module's output (a replacement,
// not an addition). The layer keeps PEFT's names: the original as "base_layer", the copies under
// "ln_tuning_layers.<adapter>", so parameters and saved keys equal PEFT's.
#pragma once

#include "peft4j/tuners/modules_to_save.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LnTuningLayer : public ModuleCopyLayer {
 public:
  LnTuningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LN_TUNING"; }
  bool can_merge() const override { return true; }
  // Merging swaps the adapter's copy in as base_layer (so merge_and_unload keeps the tuned module); one adapter at
  // a time, as in PEFT: merging a second one unmerges the first.
  void merge(const std::vector<std::string>& adapters) override;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;

 private:
  void swap(const std::string& adapter);
};

}  // namespace peft4j::tuners
