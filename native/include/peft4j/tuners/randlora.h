// RandLoRA (Albert et al., ICLR 2025) as PEFT 0.21 implements it: frozen random bases shared by every adapted layer
// (randlora_A [r, 1, min_dim], randlora_B [max_dim, n_bases, r], held by the tuner as "base_model.randlora_A/B"
// and referenced, and saved, by each layer too), scaled per layer by trainable λ [r, n_bases] and γ
// [n_bases, min(in, out)], with n_bases = ⌈min(in, out) / r⌉ so the update can reach full rank:
// Δh = scaling · U_B (U_A x), the bases ordered so that the γ-scaled one acts on the smaller dimension.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class RandLoraLayer : public LinearDeltaLayer {
 public:
  RandLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "RANDLORA"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter of basis rank r over the shared bases (sliced to this layer's shape); `persistent` follows
  // save_projection.
  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, const at::Tensor& randlora_A,
           const at::Tensor& randlora_B, bool persistent, bool initialise);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]), scaling included.
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  // PEFT's get_scaled_bases: (first, second) with Δh = second (first x).
  std::pair<at::Tensor, at::Tensor> scaled_bases(const std::string& adapter) const;

  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> randlora_lambda_ = adapter_dict("randlora_lambda");
  std::shared_ptr<AdapterDict> randlora_gamma_ = adapter_dict("randlora_gamma");
  std::shared_ptr<AdapterDict> randlora_A_ = adapter_dict("randlora_A");
  std::shared_ptr<AdapterDict> randlora_B_ = adapter_dict("randlora_B");
  std::map<std::string, int64_t> r_;
  std::map<std::string, int64_t> num_bases_;
  std::map<std::string, double> scaling_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
