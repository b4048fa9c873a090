// HRA (Yuan et al., NeurIPS 2024) as PEFT 0.21 implements it: the weight of a Linear is multiplied on the right by
// a chain of r Householder reflections H = (I - 2 u1 u1^T) ... (I - 2 ur ur^T), the u_i the normalised columns of
// hra_u.<adapter> ([in, r]); with apply_GS the columns are first orthonormalised (Gram–Schmidt) and H = I - 2 U U^T.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class HraLayer : public AdapterLayer {
 public:
  HraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "HRA"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter of r reflections; init_weights with an even r pairs equal columns (H = I).
  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise);

  // H [in, in] (W -> W H); `reverse` multiplies the reflections in the opposite order, which inverts H.
  at::Tensor reflection(const std::string& adapter, bool reverse = false) const;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor forward_with(const at::Tensor& x, const std::vector<std::string>& adapters);

  int64_t in_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> hra_u_ = adapter_dict("hra_u");
  std::map<std::string, int64_t> r_;
  std::map<std::string, bool> apply_gs_;
};

}  // namespace peft4j::tuners
