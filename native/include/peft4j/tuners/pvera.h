// PVeRA (probabilistic VeRA, arXiv 2512.07703) as PEFT 0.21 implements it: VeRA's layer (vera.h) whose λ_d and
// shared pvera_A have 2r rows, read as the means and log-variances of an r-dimensional latent. In training (and at
// inference when sample_at_inference) the latent is sampled, μ + ε · exp(logvar / 2); otherwise it is μ, which is
// also all that merging folds into the weight: ΔW = (λ_b ⊙ B[:out]) (λ_d[:r] ⊙ A[:r, :in]).
#pragma once

#include <ATen/core/Generator.h>

#include <map>
#include <optional>
#include <string>

#include "peft4j/tuners/vera.h"

namespace peft4j::tuners {

class PveraLayer : public VeraLayer {
 public:
  PveraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "PVERA"; }

  // How the adapter samples: at inference too or not, and from its own CPU generator seeded with generator_seed
  // (PEFT's per-adapter torch.Generator) or, without a seed, from the global generator.
  void set_sampling(const std::string& adapter, bool sample_at_inference, std::optional<int64_t> generator_seed);

 protected:
  int64_t lambda_d_size(int64_t r) const override { return 2 * r; }
  at::Tensor latent(const at::Tensor& scaled, const std::string& adapter) override;
  int64_t merged_rows(int64_t lambda_d_size) const override { return lambda_d_size / 2; }
  void forget_adapter(const std::string& adapter) override;

 private:
  std::map<std::string, bool> sample_at_inference_;
  std::map<std::string, std::optional<at::Generator>> generator_;
};

}  // namespace peft4j::tuners
