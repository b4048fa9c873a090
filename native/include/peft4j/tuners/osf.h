// OSF (orthogonal subspace fine-tuning) as PEFT 0.21 implements it: the wrapped weight's SVD W = U·S·Vᵀ is split at
// effective_rank k; the top-k singular directions stay frozen and the rest (U_low, S_low, V_low) train, their
// gradients projected orthogonally to the frozen subspace. ΔW = U_low·diag(S_low)·V_low − (the same at init), so the
// weight becomes U_high·S_high·V_high + U_low·S_low·V_low. On Linear layers; the forward applies the first active
// adapter only, as PEFT's does.
#pragma once

#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class OSFLayer : public WeightDeltaLayer {
 public:
  OSFLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "OSF"; }
  bool has_adapter(const std::string& adapter) const override { return osf_svd_params_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t effective_rank, bool init_weights, bool initialise);
  at::Tensor delta_weight(const std::string& adapter) const override;
  // One of the trained factors ("U_low", "S_low", "V_low") or of the frozen ones kept with them ("U_low_init",
  // "S_low_init", "V_low_init", and "U_high" / "V_high" where the layer keeps them).
  at::Tensor factor(const std::string& adapter, const std::string& name) const;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;

 private:
  LinearShape shape_;
  std::shared_ptr<AdapterDict> osf_svd_params_;
  // PEFT's BufferDict(persistent=False) entries: recomputed from the base weight's SVD, never saved.
  std::shared_ptr<AdapterDict> u_low_init_, s_low_init_, v_low_init_, u_high_, v_high_;
};

}  // namespace peft4j::tuners
