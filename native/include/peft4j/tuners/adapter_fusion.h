// AdapterFusion (Pfeiffer et al. 2021) over bottleneck adapters, as AdapterHub's BertFusion computes it: at each
// adapted sublayer, attention over the outputs Δ_j(h) of several trained adapters, with the sublayer output h as the
// query:
//
//   Δ(h) = Σ_j softmax_j( Q(h) · K(Δ_j(h)) ) · V(Δ_j(h)),   h' = h + Δ(h).
//
// A fusion is a BOTTLENECK adapter whose config names the adapters it fuses (`fusion` = ["a", "b", ...], placed like
// them: the fused adapters must be sequential adapters on the same modules, added or loaded before). Only Q, K
// (Linear d_h×d_h with bias) and V (Linear d_h×d_h without bias) train; the fused adapters stay frozen, as
// set_trainable marks only the fusion's tensors. Q and K start as N(0, 0.02) with zero bias (AdapterHub's init),
// V as the identity (AdapterHub's value_initialized; its 1e-6 off-diagonal is zero here), so a new fusion averages
// its adapters. Trainable per sublayer: 3·d_h² + 2·d_h. Saved as "<module>.adapters.query.weight", ".key.", ".value.".
// Activating the fusion alone (set_adapter) runs the fused adapters through it; activating several bottleneck
// adapters at once stacks them (AdapterHub's Stack), and forward_mixed routes rows (BatchSplit).
#pragma once

#include <string>
#include <vector>

#include "peft4j/tuners/delta_adapter.h"

namespace peft4j::tuners {

class FusionModule : public DeltaModule {
 public:
  // `layer` holds the fused adapters (and will hold this module).
  FusionModule(DeltaLayer& layer, std::vector<std::string> adapters, int64_t width);
  at::Tensor delta(const at::Tensor& z) override;
  // The attention weights [.., adapters] of the last forward, for inspection.
  const at::Tensor& last_weights() const { return last_weights_; }

 private:
  DeltaLayer& layer_;
  std::vector<std::string> adapters_;
  at::Tensor last_weights_;
};

// The adapter names a composition field of a config lists (`fusion`, `average`): empty when absent or null, at least
// two otherwise; malformed -> Error(InvalidArgument) naming the field.
std::vector<std::string> composed_adapters(const nlohmann::json& config, const std::string& field_name);
// The adapters a config fuses (empty when it is a plain bottleneck adapter); malformed -> Error(InvalidArgument).
std::vector<std::string> fused_adapters(const nlohmann::json& config);

// The fusion for `context.adapter` at `target`, which must be a DeltaLayer holding every fused adapter sequentially.
std::shared_ptr<torch::nn::Module> inject_fusion(const std::shared_ptr<torch::nn::Module>& target,
                                                 const InjectContext& context);

}  // namespace peft4j::tuners
