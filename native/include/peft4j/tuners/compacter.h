// Compacter, Compacter++ and the PHM adapter (Karimi Mahabadi et al. 2021) as AdapterHub computes them: a bottleneck
// adapter (bottleneck.h, config field phm_layer = true) whose down and up projections are parameterised
// hypercomplex multiplication (PHM) layers,
//
//   H = Σ_{i=1..n} A_i ⊗ W_i,   y = x·H + b,   n = phm_dim,
//
// with rule matrices A [n, n, n] shared by every PHM layer of the adapter (shared_phm_rule, saved once as
// "base_model.phm_rule") or one per layer, and "slow" weights W_i [in/n, out/n], factorised as W_left·W_right of rank
// phm_rank when factorized_phm_W (Compacter) or full (the PHM adapter). Compacter is the Houlsby placement (attention
// and FFN), Compacter++ the Pfeiffer one (FFN only). Per PHM layer: n·phm_rank·(in + out)/n = phm_rank·(in + out)
// factorised, (in·out)/n full, + out with phm_bias. Unsupported AdapterHub options (shared_W_phm,
// factorized_phm_rule) are refused by name.
#pragma once

#include <nlohmann/json.hpp>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

class PhmLinear : public torch::nn::Module, public models::TensorModule {
 public:
  // `shared_rule` is the adapter's rule tensor [n, n, n] when shared_phm_rule; undefined makes a rule of its own
  // (parameter "phm_rule"). Parameters: W_left [n, in/n, rank] and W_right [n, rank, out/n] (or W [n, in/n, out/n]),
  // b [out].
  PhmLinear(int64_t in, int64_t out, const nlohmann::json& config, const at::Tensor& shared_rule);
  at::Tensor forward(const at::Tensor& x) override;
  // H [in, out], the Kronecker sum.
  at::Tensor weight() const;
  // Zeroes the output side (W_right, or W) and the bias, so the layer maps everything to zero.
  void zero_output();

 private:
  int64_t n_;
  bool factorized_;
  at::Tensor rule_;  // the shared rule, held but not registered (it is saved once, at model level)
};

// The rule matrices [n, n, n] of a new adapter, drawn as phm_c_init says ("normal": N(0, phm_init_range), "uniform":
// U(-1, 1)).
at::Tensor new_phm_rule(const nlohmann::json& config, const at::TensorOptions& options);

// Refuses PHM options peft4j does not implement and widths phm_dim does not divide, naming the field.
void check_phm_config(const nlohmann::json& config);
void check_phm_widths(const nlohmann::json& config, int64_t hidden, int64_t bottleneck);

}  // namespace peft4j::tuners
