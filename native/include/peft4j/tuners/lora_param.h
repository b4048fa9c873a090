// LoRA on a parameter rather than a module, as PEFT 0.21's target_parameters (lora.ParamWrapper): the module owning
// a targeted 2-D parameter ("...self_attn.q_proj.weight", exact name or dotted suffix) is wrapped, and its forward
// runs with the parameter replaced by W + Σ scaling·B·A of the active adapters, in the parameter's own layout (A is
// [r, shape[1]], B [shape[0], r]). Keys are PEFT's (lora_A / lora_B beside base_layer). No dropout, fan_in_fan_out,
// lora_bias or LoRA variant, and no mixed batches, as in PEFT; every adapter of a model must target the same
// parameters.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LoraParamLayer : public WeightDeltaLayer {
 public:
  // Wraps `base` (a Linear, GPT-2 Conv1D or Embedding) for its parameter `parameter_name` (2-D).
  LoraParamLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                 std::string parameter_name);

  std::string peft_type() const override { return "LORA"; }
  const std::string& parameter_name() const { return parameter_name_; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  // The base output with the parameter replaced by W + ΔW(adapter).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  at::Tensor delta_weight(const std::string& adapter) const override;
  bool routes_mixed_batches() const override { return false; }
  std::string mixed_batch_refusal() const override {
    return "lora.ParamWrapper (target_parameters) does not support mixed adapter batches, as in PEFT";
  }

  // Adds an adapter of rank r; `initialise` follows init_lora_weights (true, false or "gaussian").
  void add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise);

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor parameter() const;
  // The wrapped module's forward with its parameter taken as `value`.
  at::Tensor forward_with(const at::Tensor& x, const at::Tensor& value) const;

  std::string parameter_name_;
  int64_t in_features_ = 0, out_features_ = 0;
  std::shared_ptr<AdapterDict> lora_A_, lora_B_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> scaling_;
};

// LoRA's target_parameters for one adapter: wraps the owning module of every matching parameter of `model` (none of
// which may be a target module of the config too) and adds the adapter there. Returns the module paths wrapped.
std::vector<std::string> inject_lora_parameters(models::Model& model, const InjectContext& ctx,
                                                const std::vector<std::string>& module_targets);

}  // namespace peft4j::tuners
