// C3A (Chen et al. 2024) as PEFT 0.21 implements it: ΔW is a block-circulant matrix — an (out/b) × (in/b) grid of
// b × b circulant blocks, each given by one trainable length-b kernel — applied as a circular convolution via FFT:
// Δh = BlockCircularConvolution(x, kernel) / in_features, on Linear layers.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class C3ALayer : public LinearDeltaLayer {
 public:
  C3ALayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "C3A"; }
  bool has_adapter(const std::string& adapter) const override { return block_size_.count(adapter) > 0; }
  // One adapter's update on its own (the layer's forward chains active adapters as PEFT does, see adapted_forward).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t block_size, const nlohmann::json& config, bool initialise);
  // ΔW as [out, in] (the dense block-circulant matrix divided by in_features).
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> c3a_kernel_ = adapter_dict("c3a_kernel");
  std::map<std::string, int64_t> block_size_;
};

}  // namespace peft4j::tuners
