// AdapterHub's Average and Parallel composition blocks over bottleneck adapters (the other blocks: Stack is several
// active adapters, Fuse is adapter_fusion.h, BatchSplit is PeftModel::forward_mixed).
//
// Average: a BOTTLENECK adapter whose config names the adapters it averages (`average` = ["a", "b", ...], placed
// like them, which must share one placement, sequential or parallel, and be added or loaded before). At each adapted
// sublayer the output is the weighted sum of the outputs each adapter alone would give:
//
//   h' = Σ_j w_j · h'_j,   h'_j = h + Δ_j(z)   =>   h' = h + Σ_j w_j · Δ_j(z) + (Σ_j w_j − 1) · h
//
// `average_weights` (default 1/n each) are divided by their sum unless `normalize_weights` is false, as AdapterHub's
// Average does. Unnormalised weights (Σ w ≠ 1) need sequential adapters, where z is h itself. The average has no
// tensors of its own (nothing trains or is saved). AdapterHub's bottleneck layer takes the mean over the adapters of
// the already weighted outputs, i.e. divides Σ_j w_j h'_j once more by n; peft4j returns the weighted sum, so that an
// average of identical adapters is that adapter.
//
// Parallel: forward_parallel() runs the batch once per adapter, each copy through one adapter in every layer
// (AdapterHub replicates the batch at the embeddings likewise), and returns the n·B rows, adapter by adapter.
#pragma once

#include <string>
#include <vector>

#include "peft4j/tuners/delta_adapter.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::tuners {

class AverageModule : public DeltaModule {
 public:
  // `layer` holds the averaged adapters (and will hold this module); `sequential` says where z comes from.
  AverageModule(DeltaLayer& layer, std::vector<std::string> adapters, std::vector<double> weights, bool sequential);
  at::Tensor delta(const at::Tensor& z) override;

 private:
  DeltaLayer& layer_;
  std::vector<std::string> adapters_;
  std::vector<double> weights_;
  bool sequential_;
};

// The adapters a config averages (empty for any other bottleneck adapter); malformed -> Error(InvalidArgument).
std::vector<std::string> averaged_adapters(const nlohmann::json& config);
// Their weights after `normalize_weights`; checks `average_weights` (one number per adapter, a non-zero sum).
std::vector<double> average_weights(const nlohmann::json& config);

// The average for `context.adapter` at `target`, which must be a DeltaLayer holding every averaged adapter.
std::shared_ptr<torch::nn::Module> inject_average(const std::shared_ptr<torch::nn::Module>& target,
                                                  const InjectContext& context);

// AdapterHub's Parallel block: `inputs` (without a cache) replicated once per adapter, copy j through adapter j.
// Logits (and the loss, over all copies) of n·B rows, the rows of adapters[j] at [j·B, (j + 1)·B).
models::ModelOutput forward_parallel(PeftModel& model, const models::ModelInputs& inputs,
                                     const std::vector<std::string>& adapters);

}  // namespace peft4j::tuners
