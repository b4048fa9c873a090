// LoKr (Edalati et al. 2022; LyCORIS) as PEFT 0.21 implements it on Linear layers: a parallel ΔW·x with
// ΔW = (w1 ⊗ w2) · alpha / r, a Kronecker product whose factor shapes come from factorising in and out features;
// either factor is a full matrix or a rank-r product (w1_a w1_b with decompose_both, w2_a w2_b when r is small).
// The layer keeps PEFT's ParameterDict names (lokr_w1.<adapter>, ...), so parameters and saved keys equal PEFT's.
#pragma once

#include <utility>

#include "peft4j/tuners/lycoris.h"

namespace peft4j::tuners {

class LokrLayer : public LycorisLayer {
 public:
  LokrLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LOKR"; }
  // Adds an adapter of rank r; `initialise` follows init_weights (true: w1 = 0; "lycoris": w2 = 0; false: random).
  void add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise);
  at::Tensor delta_weight(const std::string& adapter) const override;

 private:
  // PEFT registers lokr_t2 (Conv2d's CP core) on every layer; it stays empty on Linear.
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> lokr_w1_ = adapter_dict("lokr_w1");
  std::shared_ptr<AdapterDict> lokr_w1_a_ = adapter_dict("lokr_w1_a");
  std::shared_ptr<AdapterDict> lokr_w1_b_ = adapter_dict("lokr_w1_b");
  std::shared_ptr<AdapterDict> lokr_w2_ = adapter_dict("lokr_w2");
  std::shared_ptr<AdapterDict> lokr_w2_a_ = adapter_dict("lokr_w2_a");
  std::shared_ptr<AdapterDict> lokr_w2_b_ = adapter_dict("lokr_w2_b");
  std::shared_ptr<AdapterDict> lokr_t2_ = adapter_dict("lokr_t2");
};

// LyCORIS' factorization(dimension, factor) as PEFT has it: two factors m <= n of `dimension`, m as close to
// sqrt(dimension) (factor -1) or to `factor` as the divisors allow; (factor, dimension / factor) when factor > 0
// divides it.
std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor);

}  // namespace peft4j::tuners
