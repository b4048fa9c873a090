// LoHa (Hyeon-Woo et al., FedPara, ICLR 2022) as PEFT 0.21 implements it on Linear layers: a parallel ΔW·x with
// ΔW = (w1_a w1_b) ⊙ (w2_a w2_b) · alpha / r, a Hadamard product of two rank-r products. The layer keeps PEFT's
// ParameterDict names (hada_w1_a.<adapter>, ...), so parameters and saved keys equal PEFT's.
#pragma once

#include "peft4j/tuners/lycoris.h"

namespace peft4j::tuners {

class LohaLayer : public LycorisLayer {
 public:
  LohaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LOHA"; }
  // Adds an adapter of rank r; `initialise` follows init_weights (true: w2_b = 0, so ΔW starts at 0).
  void add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise);
  at::Tensor delta_weight(const std::string& adapter) const override;

 private:
  // PEFT registers hada_t1/hada_t2 (Conv2d's CP cores) on every layer; they stay empty on Linear.
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> hada_w1_a_ = adapter_dict("hada_w1_a");
  std::shared_ptr<AdapterDict> hada_w1_b_ = adapter_dict("hada_w1_b");
  std::shared_ptr<AdapterDict> hada_w2_a_ = adapter_dict("hada_w2_a");
  std::shared_ptr<AdapterDict> hada_w2_b_ = adapter_dict("hada_w2_b");
  std::shared_ptr<AdapterDict> hada_t1_ = adapter_dict("hada_t1");
  std::shared_ptr<AdapterDict> hada_t2_ = adapter_dict("hada_t2");
};

}  // namespace peft4j::tuners
