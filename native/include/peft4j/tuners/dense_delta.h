// The layer of the methods whose ΔW is built whole as [out, in] from a few coefficients (FourierFT's inverse DFT,
// WaveFT's inverse DWT): merging stores it in the base weight's layout, the forward adds x·ΔWᵀ.
#pragma once

#include <string>

#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

class DenseDeltaLayer : public LinearDeltaLayer {
 public:
  using LinearDeltaLayer::LinearDeltaLayer;

  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  at::Tensor delta_weight(const std::string& adapter) const override;
  // ΔW as [out, in] (the layout the forward uses for Linear and Conv1D alike).
  virtual at::Tensor delta_out_in(const std::string& adapter) const = 0;
};

}  // namespace peft4j::tuners
