// BEFT (bias-efficient fine-tuning, arXiv 2509.15974) as PEFT 0.21 implements it: one trainable bias vector per
// adapter added to a Linear's output, h + b_a (the active adapters' vectors summed); merging adds b_a to the wrapped
// layer's bias, so it needs a layer with a bias.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class BeftLayer : public AdapterLayer {
 public:
  BeftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "BEFT"; }
  bool has_adapter(const std::string& adapter) const override { return beft_bias_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }
  // PEFT merges into the wrapped layer's bias and raises for a layer without one.
  bool can_merge() const override { return linear_bias(*base_layer()).defined(); }

  void add(const std::string& adapter, bool init_weights, bool initialise);
  // b_a as PEFT stores it, [1, out].
  at::Tensor bias(const std::string& adapter) const { return beft_bias_->parameter(adapter); }

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;

 private:
  LinearShape shape_;
  std::shared_ptr<AdapterDict> beft_bias_;
};

}  // namespace peft4j::tuners
