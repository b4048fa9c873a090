// VeRA (Kopiczko et al. 2024) as PEFT 0.21 implements it: one pair of frozen random projections vera_A [r, in_max]
// and vera_B [out_max, r] shared by every adapted layer (held by the tuner as "base_model.vera_A/vera_B"), and
// per layer two trainable scaling vectors: Δh = λ_b ⊙ (B[:out] (λ_d ⊙ (A[:, :in] x))).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class VeraLayer : public LinearDeltaLayer {
 public:
  VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "VERA"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter of rank r over the shared projections (sliced to this layer's shape).
  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, const at::Tensor& vera_A,
           const at::Tensor& vera_B, bool initialise);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]).
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> vera_lambda_b_ = adapter_dict("vera_lambda_b");
  std::shared_ptr<AdapterDict> vera_lambda_d_ = adapter_dict("vera_lambda_d");
  // The tuner's shared projections: PEFT's layers reference them too but save them only once, at model level.
  std::map<std::string, at::Tensor> vera_A_, vera_B_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
