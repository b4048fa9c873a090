// FRoD as PEFT 0.21 implements it: per module category (the last two name parts, "self_attn_q_proj") a frozen basis
// V [in, in] shared by that category's layers, built from their stacked weights (SVD, or QR and an eigenbasis of the
// averaged regularised inverses), and per layer a frozen U with W = U diag(λ) Vᵀ; the adapted weight itself is
// trained as W' = U (S + diag(λ_l)) Vᵀ, with λ_l and the values of a sparse off-diagonal S (seeded positions,
// sparse_rate of them) trainable. The layer computes W' x directly; ΔW = W' − W.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class FrodLayer : public WeightDeltaLayer {
 public:
  FrodLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "FROD"; }
  bool has_adapter(const std::string& adapter) const override { return V_.count(adapter) > 0; }
  // One adapter over the base output `result`: result + W'x − Wx.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter over its category's shared V, s_indices and s_size (model-level tensors, read at each use so
  // that a load into them takes effect).
  void add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& V, const at::Tensor& s_indices,
           const at::Tensor& s_size, bool initialise);
  // W' − W, W the weight before any adapter was merged (PEFT keeps that copy while adapters are merged).
  at::Tensor delta_weight(const std::string& adapter) const override;
  // U [out, in] in f32 for the adapter's current V and the unmerged weight.
  at::Tensor U(const std::string& adapter) const;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  // W as [out, in] before any merge.
  at::Tensor unmerged_weight() const;
  // The dense S [in, in] of the trained values at the adapter's positions.
  at::Tensor sparse_part(const std::string& adapter, const at::ScalarType dtype) const;
  // W' h for the adapter's trained weight (bias-free), h [..., in].
  at::Tensor reconstructed(const at::Tensor& h, const std::string& adapter) const;

  LinearShape shape_;
  std::shared_ptr<AdapterDict> frod_lambda_l_, frod_lambda_s_values_;
  std::map<std::string, at::Tensor> V_, s_indices_, s_size_;
  std::map<std::string, double> dropout_;
  // U depends on V, recomputed when V's storage was written (a load) since it was last derived.
  mutable std::map<std::string, std::pair<int64_t, at::Tensor>> U_;
  at::Tensor weight_before_merge_;
};

// FRoD's grouping of target modules (PEFT's _category_from_key): "model.layers.0.self_attn.q_proj" ->
// "self_attn_q_proj", BERT's "attention.output.dense" -> "attention_output".
std::string frod_category(const std::string& key);

}  // namespace peft4j::tuners
