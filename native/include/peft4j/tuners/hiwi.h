// HiWi (Liao et al. 2023, "Parameter-Efficient Fine-Tuning without Introducing New Latency"), peft_type "HIWI" (a
// peft4j value): the adapter transforms pretrained parameters, not hidden states. For a parameter p of the targeted
// modules, each of its rows (a bias is one row of n; a weight in Linear layout [out, in] has out rows of n = in; an
// embedding one row per token):
//     p′ = p + f(p·W_down + b_down)·W_up + b_up,   W_down [n, r], W_up [r, n], f = non_linearity (ReLU).
// W_down and b_down start as nn.Linear does, W_up and b_up at zero: the identity. After training p′ is computed once
// and the adapter thrown away: the saved adapter holds p′ under the model's own key ("<module>.bias"), |p| numbers
// whatever r, and a merged model runs at the base model's cost. A loaded adapter holds p′ itself (trainable as it is).
// Default target: the biases of the feed-forward modules (target_modules null: gate/up/down_proj, mlp.c_fc/c_proj,
// intermediate/output.dense, wi/wo by family); `target_parameters` ["weight"] adapts their weights row-wise instead.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "peft4j/models/bert.h"
#include "peft4j/tuners/parameter_delta.h"

namespace peft4j::tuners {

class HiwiLayer : public ParameterDeltaLayer {
 public:
  HiwiLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "HIWI"; }
  bool has_adapter(const std::string& adapter) const override { return parameters_.count(adapter) > 0; }
  at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) override;

  // Adds an adapter on `parameters` ("weight", "bias"): the adapter networks of rank r (training form), or when
  // `stored`, p′ itself (a loaded adapter; its values come from the file).
  void add(const std::string& adapter, const std::vector<std::string>& parameters, int64_t r,
           const std::string& non_linearity, bool stored);
  const std::vector<std::string>& adapted_parameters(const std::string& adapter) const { return parameters_.at(adapter); }
  // Whether the adapter holds p′ itself rather than the networks.
  bool stored(const std::string& adapter) const { return stored_.count(adapter) > 0; }
  // p′ as the adapter gives it now.
  at::Tensor merged_parameter(const std::string& adapter, const std::string& name);

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor transform(const std::string& adapter, const std::string& name, const at::Tensor& value);
  std::map<std::string, std::shared_ptr<AdapterDict>> networks_;  // by parameter: "hiwi_weight", "hiwi_bias"
  std::map<std::string, std::shared_ptr<AdapterDict>> values_;    // by parameter: "hiwi_stored_weight", ...
  std::map<std::string, std::vector<std::string>> parameters_;
  std::map<std::string, models::Activation> activation_;
  std::set<std::string> stored_;
};

}  // namespace peft4j::tuners
