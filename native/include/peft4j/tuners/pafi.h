// PaFi (Liao et al. 2023, "Parameter-Efficient Fine-Tuning without Introducing New Latency"), peft_type "PAFI" (a
// peft4j value): a task-agnostic sparse mask chosen before training, no mask training. M holds the k entries with the
// smallest |θ₀| over the weight matrices of the targeted Linear/Conv1D modules together (ties in flat index order);
// θ = θ₀ + M ⊙ δ with δ = 0 at init, and only the k values of δ train. mask_type "fisher" takes instead the k entries
// with the smallest empirical Fisher information (1/N)·Σᵢ(∂Lᵢ/∂θ)² over calibration examples the user gives.
//
// Saved per layer: "<module>.pafi_values" (its values of δ, in increasing flat index order); a magnitude mask is
// recomputed from θ₀ on loading (the base fingerprints refuse another base by name), a Fisher mask is saved as well
// ("<module>.pafi_indices", int32 flat indices). Merging adds M ⊙ δ into the weights: no added latency.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/parameter_delta.h"

namespace peft4j::tuners {

class PafiLayer : public ParameterDeltaLayer {
 public:
  PafiLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "PAFI"; }
  bool has_adapter(const std::string& adapter) const override { return values_->contains(adapter); }
  at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) override;

  // Adds an adapter whose mask in this layer holds the flat `indices` of the weight; `saved` whether they are saved
  // with it (a Fisher mask) rather than recomputed.
  void add(const std::string& adapter, const at::Tensor& indices, bool saved);
  at::Tensor indices(const std::string& adapter) const { return indices_->parameter(adapter); }
  at::Tensor values(const std::string& adapter) const { return values_->parameter(adapter); }

 private:
  std::shared_ptr<AdapterDict> values_;
  std::shared_ptr<AdapterDict> indices_;
};

}  // namespace peft4j::tuners
