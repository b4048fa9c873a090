// PSOFT (orthogonal fine-tuning in the principal subspace) as PEFT 0.21 implements it on nn.Linear: frozen A [r, in]
// and B [out, r] from the base weight's top-r SVD (recomputed from the weight, never saved), and a trained r × r
// matrix R between them — the Cayley transform (exact or Neumann series) of a skew-symmetric matrix, or a free matrix
// without psoft_orth, optionally scaled on each side (psoft_mag_b, psoft_mag_a): ΔW = s · B (R − I) A, s = α / r.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// PEFT's OrthLayer: "weight" (the strict upper triangle of Q, r(r-1)/2, or the free r × r matrix), "vector_b" and
// "vector_a".
class PsoftRotation : public torch::nn::Module {
 public:
  PsoftRotation(int64_t size, const nlohmann::json& config);
  // R = diag(vector_b) · Cayley(Q) · diag(vector_a) (or the free matrix in place of Cayley(Q)).
  at::Tensor matrix() const;
  // PEFT's reset_parameters: the identity (zeros / eye, unit vectors) or, without init_weights, N(0, 0.1) off it.
  void reset(bool init_weights);

 private:
  int64_t size_;
  bool orth_, neumann_;
  int64_t neumann_terms_;
  std::optional<double> neumann_eps_;
  at::Tensor weight_, vector_b_, vector_a_;
};

class PsoftLayer : public WeightDeltaLayer {
 public:
  PsoftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "PSOFT"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  at::Tensor delta_weight(const std::string& adapter) const override;
  // The frozen factors (f32) PEFT caches: A [r, in] and B [out, r].
  const at::Tensor& A(const std::string& adapter) const { return A_.at(adapter); }
  const at::Tensor& B(const std::string& adapter) const { return B_.at(adapter); }

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  LinearShape shape_;
  std::shared_ptr<AdapterDict> psoft_R_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> scaling_, dropout_;
  std::map<std::string, at::Tensor> A_, B_;
};

}  // namespace peft4j::tuners
