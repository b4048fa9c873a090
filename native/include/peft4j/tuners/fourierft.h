// FourierFT (Gao et al., ICML 2024) as PEFT 0.21 implements it: per layer n trainable spectral coefficients at
// fixed random frequencies (entries of an out × in spectrum); ΔW = Re(ifft2(dense spectrum)) · scaling, and
// Δh = ΔW x, on Linear and GPT-2's Conv1D.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/dense_delta.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class FourierFTLayer : public DenseDeltaLayer {
 public:
  FourierFTLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "FOURIERFT"; }
  bool has_adapter(const std::string& adapter) const override { return n_frequency_.count(adapter) > 0; }
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t n_frequency, const nlohmann::json& config, bool initialise);
  at::Tensor delta_out_in(const std::string& adapter) const override;
  // The chosen frequencies as [2, n]: rows and columns of the spectrum.
  const at::Tensor& indices(const std::string& adapter) const { return indices_.at(adapter); }

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> fourierft_spectrum_ = adapter_dict("fourierft_spectrum");
  std::map<std::string, int64_t> n_frequency_;
  std::map<std::string, double> scaling_;
  std::map<std::string, at::Tensor> indices_;  // PEFT's plain dict: derived from the seed, never saved
};

}  // namespace peft4j::tuners
