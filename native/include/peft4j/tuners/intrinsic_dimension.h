// Intrinsic dimension (Li et al. 2018; Aghajanyan et al. 2021), peft_type "INTRINSIC_DIMENSION" (a peft4j value):
// every parameter of the targeted modules moves in one random d-dimensional subspace. DID: θ_t = θ₀,t + P_t(θ^d);
// SAID (`said`, the default) gives each parameter tensor t a scale: θ_t = θ₀,t + λ_t·P_t(θ^(d−m)), m the number of
// adapted tensors, λ = 1 at init, so the trainable numbers are exactly d. θ = 0 at init: the identity.
//
// Projections P_t: R^d' → R^(D_t), one per tensor, generated from `projection_prng_key` and the parameter's name:
//   "fastfood" (default)  P_t(x) = (H G Π H B x̃)[:D_t] / √(D_t·ΣG²), x̃ = x zero-padded to L_t = 2^⌈log₂ max(D_t, d')⌉,
//                         H the unnormalised Walsh–Hadamard transform, B ∈ {±1}^L, Π a permutation, G ~ N(0, 1)^L
//                         (the authors' fastfood_torched; where d' > D_t they crop θ to L_t entries, peft4j pads to
//                         the larger size instead, so every tensor sees all of θ);
//   "dense"               a D_t × d' matrix of N(0, 1/D_t) entries (columns of unit length in expectation, as Li et
//                         al. normalise them);
//   "sparse"              Li et al.'s very sparse projection: each entry ±√(s/D_t) with probability 1/(2s) each, else 0,
//                         s = √D_t.
// All three keep ‖P_t(x)‖ ≈ ‖x‖. The backward pass is autograd's, i.e. the true adjoint Pᵀ (the authors' fastfood
// backward scales the Hadamard transform by 1/√L instead).
//
// Saved: θ as "base_model.intrinsic_vector" [d'] and, with SAID, each layer's scales as "<module>.intrinsic_lambda"
// [its adapted tensors: weight, then bias]; the projections are regenerated from the seed. Merging materialises θ.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/parameter_delta.h"

namespace peft4j::tuners {

// One random projection R^d' → R^D (a parameter tensor's P_t).
class IntrinsicProjection {
 public:
  // `kind` "fastfood", "dense" or "sparse"; `seed` fixes it; built on `device`.
  IntrinsicProjection(const std::string& kind, int64_t in, int64_t out, uint64_t seed, const at::Device& device);
  // P(x) for x [in], as [out].
  at::Tensor operator()(const at::Tensor& x) const;
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  const at::Device& device() const { return device_; }

 private:
  std::string kind_;
  int64_t in_, out_, length_ = 0;
  at::Device device_;
  at::Tensor signs_, permutation_, gaussian_;  // fastfood: B, Π, G
  double divisor_ = 1;                         // fastfood: √(D·ΣG²)
  at::Tensor matrix_;                          // dense
  at::Tensor rows_, cols_, values_;            // sparse (COO)
};

// The unnormalised Walsh–Hadamard transform of x [2^k] (differentiable; H is its own adjoint).
at::Tensor walsh_hadamard(const at::Tensor& x);

class IntrinsicLayer : public ParameterDeltaLayer {
 public:
  IntrinsicLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "INTRINSIC_DIMENSION"; }
  bool has_adapter(const std::string& adapter) const override { return adapters_.count(adapter) > 0; }
  at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) override;

  // Adds an adapter over the shared vector θ (`vector`); `path` (the module's) names each tensor's projection seed.
  void add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& vector, const std::string& path);
  // The parameters the adapter moves, in the order of their scales.
  std::vector<std::string> parameters() const;
  // P_t for parameter `name` of `adapter` (built on first use).
  const IntrinsicProjection& projection(const std::string& adapter, const std::string& name);

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Adapter {
    at::Tensor vector;
    std::string kind;
    uint64_t key = 0;
    std::string path;
    bool said = true;
  };
  std::shared_ptr<AdapterDict> lambda_;
  std::map<std::string, Adapter> adapters_;
  std::map<std::pair<std::string, std::string>, IntrinsicProjection> projections_;
};

// The parameters of a module that intrinsic dimension adapts: its weight and, where it has one, its bias.
std::vector<std::string> intrinsic_parameters(const torch::nn::Module& module);

}  // namespace peft4j::tuners
