// DeLoRA (Bini et al. 2025) as PEFT 0.21 implements it, on Linear layers: a rank-r update whose rank-1 terms are
// normalised and bounded by one trainable λ, ΔW = B · diag(λ / r / (‖A_i‖ · ‖B_·i‖)) · A, with column j of ΔW scaled
// by the norm of column j of the base weight, taken when the adapter is added (delora_w_norm, saved with it).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class DeloraLayer : public WeightDeltaLayer {
 public:
  DeloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "DELORA"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter of rank r whose bound starts at `delora_lambda`.
  void add(const std::string& adapter, int64_t r, double delora_lambda, const nlohmann::json& config, bool initialise);
  // ΔW as [out, in].
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  // λ / r / (‖A_i‖ · ‖B_·i‖) per rank-1 term, the norms clamped at 1e-4 as PEFT does.
  at::Tensor term_scaling(const std::string& adapter) const;

  LinearShape shape_;
  std::shared_ptr<AdapterDict> delora_A_, delora_B_, delora_lambda_, delora_w_norm_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
