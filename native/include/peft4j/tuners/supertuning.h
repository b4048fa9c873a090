// Super-Tuning (arXiv 2607.09287) as PEFT 0.21 implements it: the base weight stays frozen and a sparse support of
// its entries — the k = ⌊numel·(1 − sparsity)⌋ largest (select_top) or smallest magnitudes — gets trainable values,
// scatter-added onto the weight in the forward (W' = W + scatter(values)); with `r` set ("Supra"), a LoRA update
// (α/r)·B·A is added on top. On Linear layers.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class SupertuningLayer : public WeightDeltaLayer {
 public:
  SupertuningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "SUPERTUNING"; }
  bool has_adapter(const std::string& adapter) const override { return supertuning_values_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  // ΔW [out, in]: the values scattered into zeros, plus the LoRA update in Supra mode.
  at::Tensor delta_weight(const std::string& adapter) const override;
  // The flat positions of the sparse support (int32, as PEFT stores them) and their values.
  at::Tensor indices(const std::string& adapter) const { return supertuning_indices_->parameter(adapter); }
  at::Tensor values(const std::string& adapter) const { return supertuning_values_->parameter(adapter); }
  // Whether the indices are saved (PEFT's BufferDict(persistent=...), fixed by the layer's first adapter).
  bool saves_indices() const { return saves_indices_; }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor lora_delta(const std::string& adapter, at::ScalarType dtype) const;
  at::Tensor lora_output(const at::Tensor& x, const std::string& adapter, at::ScalarType dtype);

  LinearShape shape_;
  std::shared_ptr<AdapterDict> supertuning_values_, supertuning_indices_, supertuning_lora_A_, supertuning_lora_B_;
  std::map<std::string, int64_t> rank_;  // 0: no LoRA part ("Super" mode)
  std::map<std::string, double> scaling_;  // lora_alpha / r
  std::map<std::string, double> dropout_;
  bool saves_indices_ = true;
};

}  // namespace peft4j::tuners
