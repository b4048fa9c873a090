// LoRA (Hu et al. 2021) and its variants as PEFT 0.21 implements them: rsLoRA scaling, DoRA (weight-decomposed
// magnitude), rank/alpha patterns, on Linear, GPT-2's Conv1D (fan_in_fan_out) and Embedding. The layer keeps
// PEFT's module names (lora_A.<adapter>, lora_B.<adapter>, lora_embedding_A.<adapter>, lora_magnitude_vector),
// so parameters and saved keys equal PEFT's.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// PEFT 0.21's LoraConfig fields with their defaults, as `peft_type` (AdaLoRA's config extends LoRA's).
nlohmann::json lora_config_defaults(const std::string& peft_type);
// Refuses by name the LoraConfig options peft4j does not reproduce (Megatron, EVA, CorDA, aLoRA, ...) when set.
void refuse_unsupported_lora_options(const nlohmann::json& config);

class LoraLayer : public WeightDeltaLayer {
 public:
  LoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LORA"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  // A gated adapter's output depends on the input through its gate, so no weight expresses it.
  bool can_merge() const override { return gates_->children().empty(); }

  // Adds an adapter of rank r; `initialise` follows init_lora_weights (true, false or "gaussian").
  void add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise);
  // Gives the (Linear/Conv1D) adapter UniPELT's gate, "lora_gate.<adapter>" = Linear(in, 1) with N(0, 0.02) weights
  // (AdapterHub's LoRA with use_gating): the update becomes B·A·x times the sequence-mean of sigmoid(gate(x)), which
  // replaces the scaling α/r.
  void add_gate(const std::string& adapter);

  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out], Embedding [num, dim]), scaling included.
  at::Tensor delta_weight(const std::string& adapter) const override;
  double scaling(const std::string& adapter) const { return scaling_.at(adapter); }
  int64_t rank(const std::string& adapter) const { return r_.at(adapter); }
  bool is_embedding() const { return embedding_; }
  // The A and B tensors (Linear: [r, in] and [out, r]; Embedding: [r, num] and [dim, r]).
  at::Tensor lora_a(const std::string& adapter) const;
  at::Tensor lora_b(const std::string& adapter) const;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor weight_out_in() const;      // the same as [out, in] (Conv1D transposed)
  at::Tensor dora_weight_norm(const at::Tensor& lora_weight, double scale) const;

  bool embedding_ = false;
  bool fan_in_fan_out_ = false;  // GPT-2's Conv1D stores [in, out]
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> lora_A_ = adapter_dict("lora_A");
  std::shared_ptr<AdapterDict> lora_B_ = adapter_dict("lora_B");
  std::shared_ptr<AdapterDict> lora_embedding_A_ = adapter_dict("lora_embedding_A");
  std::shared_ptr<AdapterDict> lora_embedding_B_ = adapter_dict("lora_embedding_B");
  std::shared_ptr<AdapterDict> lora_magnitude_vector_ = adapter_dict("lora_magnitude_vector");
  std::shared_ptr<AdapterDict> gates_ = adapter_dict("lora_gate");
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> scaling_;
  std::map<std::string, double> dropout_;
  std::map<std::string, at::Tensor> merged_weight_norm_;  // DoRA: the norm at merge time, needed to unmerge
};

}  // namespace peft4j::tuners
