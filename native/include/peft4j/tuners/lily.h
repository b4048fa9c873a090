// Lily (Zhong et al. 2024, "Low-Rank Interconnected Adaptation across Layers") as PEFT 0.21 implements it, on Linear
// layers: each layer projects down with an A that stride_A consecutive layers of one target share, and projects up
// with a mix of num_B B experts that every layer of that target shares, weighted by the layer's router averaged over
// all tokens of the forward: Δh = scaling · (A x) · Σ_e p̄_e B_e, p̄ = mean over tokens of softmax(router(A x)).
// Lily does not merge (PEFT raises), and its mix depends on the whole forward's tokens, so a mixed batch is refused.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LilyLayer : public AdapterLayer {
 public:
  LilyLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LILY"; }
  bool has_adapter(const std::string& adapter) const override { return settings_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter whose lily_A / lily_B weights are `shared_a` / `shared_b` (the tensors the layer's group shares);
  // `draws_a` / `draws_b`: this layer is the first of its A block / of its group and draws the shared values.
  void add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& shared_a, bool draws_a,
           const at::Tensor& shared_b, bool draws_b, bool initialise);

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Settings {
    int64_t r = 0, num_B = 0;
    double scaling = 0;
  };

  LinearShape shape_;
  std::shared_ptr<AdapterDict> lily_A_, lily_B_, lily_router_;
  std::map<std::string, Settings> settings_;
};

}  // namespace peft4j::tuners
