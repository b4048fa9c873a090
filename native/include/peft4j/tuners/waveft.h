// WaveFT (wavelet fine-tuning) as PEFT 0.21 implements it: per layer n trainable wavelet coefficients at seeded
// random positions of an out × in coefficient matrix (padded for the wavelet's filter length); ΔW = the inverse 2-D
// DWT of that matrix (its four quadrants the sub-bands), centre-cropped to out × in, times scaling — or, with
// use_idwt false, the coefficients themselves as a sparse ΔW. Δh = ΔW x, on Linear and GPT-2's Conv1D.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/dense_delta.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class WaveFTLayer : public DenseDeltaLayer {
 public:
  WaveFTLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "WAVEFT"; }
  bool has_adapter(const std::string& adapter) const override { return settings_.count(adapter) > 0; }
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t n_frequency, const nlohmann::json& config, bool initialise);
  at::Tensor delta_out_in(const std::string& adapter) const override;
  // The coefficients' positions as [2, n]: rows and columns of the out × in matrix.
  const at::Tensor& indices(const std::string& adapter) const { return indices_.at(adapter); }

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Settings {
    int64_t n_frequency;
    double scaling;
    std::string wavelet_family;
    bool use_idwt;
  };
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> waveft_spectrum_ = adapter_dict("waveft_spectrum");
  std::map<std::string, Settings> settings_;
  std::map<std::string, at::Tensor> indices_;  // PEFT's plain dict: derived from the seed, never saved
};

}  // namespace peft4j::tuners
