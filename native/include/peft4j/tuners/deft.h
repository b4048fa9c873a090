// DEFT (decompositional efficient fine-tuning) as PEFT 0.21 implements it: per layer a trained projection direction
// P [out, r] and injection R [r, in] replace a subspace of the frozen weight, W' = (I − P_proj) W + s · Q_P R, with
// Q_P = P and P_proj = P relu(P)ᵀ ("relu") or Q_P = qr(P), P_proj = Q_P Q_Pᵀ ("qr"); s = alpha / r (1 without
// alpha). PaRa (para) keeps only the removal, W' = (I − P_proj) W. The update is computed on the activations, in f32:
// Δh = −((W x) right) Q_Pᵀ + s (R x) Q_Pᵀ, where right is relu(P) or Q_P and W x the bias-free base output.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class DeftLayer : public WeightDeltaLayer {
 public:
  DeftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "DEFT"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  // One adapter over the base output `result`.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter of rank min(r, out_features).
  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  // ΔW = Q_P (s R − rightᵀ W) (PaRa: −Q_P rightᵀ W) in the base weight's layout.
  at::Tensor delta_weight(const std::string& adapter) const override;
  // PEFT merges a set of adapters with every removal term taken from the unmerged weight, and keeps each rightᵀ W
  // so that unmerging subtracts exactly what merging added.
  void merge(const std::vector<std::string>& adapters) override;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  // (Q_P, right) in f32.
  static std::pair<at::Tensor, at::Tensor> project(const at::Tensor& P, bool qr);
  std::pair<at::Tensor, at::Tensor> project(const std::string& adapter) const;
  // rightᵀ W [r, in] in f32, W the logical [out, in] base weight: what the adapter removes (the merge factor).
  at::Tensor removed(const at::Tensor& P, bool qr) const;
  at::Tensor merge_factor(const std::string& adapter) const;
  at::Tensor delta_from_factor(const std::string& adapter, const at::Tensor& factor) const;
  // `result` (f32) with the adapter's removal and injection, given the f32 input and the bias-free base product W x.
  at::Tensor updated(const at::Tensor& x, const at::Tensor& base_product, at::Tensor result, const std::string& adapter);

  LinearShape shape_;
  std::shared_ptr<AdapterDict> deft_P_, deft_R_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, bool> qr_, para_;
  std::map<std::string, double> scaling_, dropout_;
  std::map<std::string, at::Tensor> merged_factor_;
};

}  // namespace peft4j::tuners
