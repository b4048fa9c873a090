// (IA)^3 (Liu et al. 2022) as PEFT 0.21 implements it: a learned vector l rescales a hidden state elementwise.
// On attention key/value projections (and any other non-feedforward target) it scales the module's output
// (ia3_l [out, 1]); on feedforward_modules it scales the module's input (ia3_l [1, in]). Wraps Linear and GPT-2's
// Conv1D (fan_in_fan_out). The layer keeps PEFT's ParameterDict name ia3_l.<adapter>, so parameters and saved keys
// equal PEFT's.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class Ia3Layer : public AdapterLayer {
 public:
  Ia3Layer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state, bool is_feedforward);

  std::string peft_type() const override { return "IA3"; }
  bool has_adapter(const std::string& adapter) const override { return ia3_l_->contains(adapter); }
  // One adapter alone (a mixed batch's rows): the output scaled, or the base run on the scaled input.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter; `initialise` follows init_ia3_weights (true: ones, the identity; false: N(0, 1)).
  void add(const std::string& adapter, bool init_ia3_weights, bool initialise);
  bool is_feedforward() const { return is_feedforward_; }
  at::Tensor vector(const std::string& adapter) const { return ia3_l_->parameter(adapter); }

 protected:
  // The active adapters' vectors multiply into one scaling, applied once, as PEFT does.
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;

 private:
  at::Tensor scaled(const at::Tensor& x, const at::Tensor& result, const at::Tensor& scaling);
  // l laid out like the base weight (Linear [out, in], Conv1D [in, out]) for merging.
  at::Tensor weight_factor(const std::string& adapter) const;

  bool is_feedforward_;
  bool fan_in_fan_out_ = false;  // GPT-2's Conv1D stores [in, out]
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> ia3_l_ = adapter_dict("ia3_l");
};

}  // namespace peft4j::tuners
