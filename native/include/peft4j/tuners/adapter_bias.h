// AdapterBias (Fu et al. 2022), peft_type "ADAPTER_BIAS" (a peft4j value): a token-dependent shift of the FFN output
// h [.., d_h],  Δh = (h·α)·v,  α [d_h, 1] weighs each token, v [1, d_h] is the shared shift direction. Placed
// sequentially after the FFN (delta_adapter.h), on every layer except `leave_out` (AdapterDrop's `adapter_drop` as
// for bottleneck adapters). init_weights true (default) starts v at zero, so an untrained adapter is the identity;
// α starts as a Linear(d_h, 1) weight (Kaiming-uniform). 2·d_h trainable parameters per layer. Δh is linear in h, so
// it merges into the FFN's last projection: W' = (I + vᵀαᵀ)·W, b' = b + (b·α)·v, and unmerges through the
// Sherman-Morrison inverse (I + αv)⁻¹ = I − αv / (1 + v·α). Saved keys: "<module>.adapters.alpha", ".adapters.v".
#pragma once

#include "peft4j/tuners/delta_adapter.h"

namespace peft4j::tuners {

class AdapterBiasModule : public DeltaModule {
 public:
  AdapterBiasModule(int64_t width, bool identity);
  at::Tensor delta(const at::Tensor& z) override;
  bool mergeable() const override { return true; }
  void merge_into(torch::nn::Module& base, bool inverse) override;

  at::Tensor alpha;  // [d_h, 1]
  at::Tensor v;      // [1, d_h]
};

}  // namespace peft4j::tuners
