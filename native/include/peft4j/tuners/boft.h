// BOFT (Liu et al., ICLR 2024) as PEFT 0.21 implements it: the input of a Linear is rotated by a product of
// butterfly factors, each a permuted block-diagonal matrix of Cayley-transformed blocks (boft_R.<adapter>,
// [factors, blocks, b, b]), and the output rows are scaled by boft_s.<adapter> ([out, 1]). With one factor BOFT is OFT
// with exact Cayley blocks plus the scale.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class BoftLayer : public AdapterLayer {
 public:
  BoftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "BOFT"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter; `key` (the module path) names the module when the block settings do not fit its width.
  void add(const std::string& adapter, const nlohmann::json& config, const std::string& key, bool initialise);

  // The orthogonal butterfly matrix [in, in] (x -> x M) of one adapter, without dropout.
  at::Tensor butterfly_matrix(const std::string& adapter) const;
  at::Tensor scale(const std::string& adapter) const { return boft_s_->parameter(adapter); }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor butterfly(const std::string& adapter, bool dropout) const;
  at::Tensor rotate_and_scale(const at::Tensor& x, const std::vector<std::string>& adapters);

  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> boft_R_ = adapter_dict("boft_R");
  std::shared_ptr<AdapterDict> boft_s_ = adapter_dict("boft_s");
  // Per adapter, the permutations of factors 1.. (row i of a permuted factor is row perm[i] of its block diagonal).
  std::map<std::string, std::vector<at::Tensor>> permutations_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
