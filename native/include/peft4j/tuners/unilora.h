// Uni-LoRA (Li et al. 2025, "One Vector Is All You Need") as PEFT 0.21 implements it, on Linear and GPT-2 Conv1D
// layers: every entry of every layer's LoRA pair (A [r, in], B [out, r]) is one entry of a single trainable vector
// θ_d (theta_d_length, model-level: "base_model.unilora_theta_d"), picked by a fixed index and scaled by
// 1/√(how often that entry is picked): ΔW = B A with A = θ_d[I_A] ⊙ S_A, B = θ_d[I_B] ⊙ S_B. The indices are a
// balanced assignment NumPy shuffles with proj_seed, regenerated whenever the adapter is added (saved only with
// save_indices).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class UniLoraLayer : public WeightDeltaLayer {
 public:
  UniLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "UNILORA"; }
  bool has_adapter(const std::string& adapter) const override { return dropout_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter over the shared vector `theta_d`, with this layer's indices and the per-entry 1/√count.
  void add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& theta_d,
           const at::Tensor& indices_a, const at::Tensor& indices_b, const at::Tensor& inverse_sqrt_counts);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]).
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  std::pair<at::Tensor, at::Tensor> lora_matrices(const std::string& adapter, bool f32) const;

  LinearShape shape_;
  std::shared_ptr<AdapterDict> unilora_indices_A_, unilora_indices_B_, unilora_scales_A_, unilora_scales_B_,
      unilora_theta_d_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
