// LoRA (Hu et al. 2021) and its variants as PEFT 0.21 implements them: rsLoRA scaling, DoRA (weight-decomposed
// magnitude), rank/alpha patterns, lora_bias, on Linear, GPT-2's Conv1D (fan_in_fan_out) and Embedding. The layer
// keeps PEFT's module names (lora_A.<adapter>, lora_B.<adapter>, lora_embedding_A.<adapter>, lora_magnitude_vector),
// so parameters and saved keys equal PEFT's. The other variants (aLoRA, BD-LoRA, KaSA, ...) plug in through
// LoraVariant (lora_variant.h), each in its own file pair.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "peft4j/tuners/lora_variant.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// PEFT 0.21's LoraConfig fields with their defaults, as `peft_type` (AdaLoRA's config extends LoRA's).
nlohmann::json lora_config_defaults(const std::string& peft_type);
// Refuses by name the LoraConfig options peft4j does not reproduce (Megatron, QA-LoRA, ...) when set; LoRA itself
// takes its variants' fields, target_parameters, layer_replication and its initialisations' sub-configs.
void refuse_unsupported_lora_options(const nlohmann::json& config);

class LoraLayer : public WeightDeltaLayer {
 public:
  LoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "LORA"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  // A gated adapter's output depends on the input through its gate, so no weight expresses it; an active adapter's
  // variant may refuse merging too (aLoRA, Arrow).
  bool can_merge() const override;
  std::string merge_refusal() const override;
  bool routes_mixed_batches() const override;
  std::string mixed_batch_refusal() const override;

  // Adds an adapter of rank r; `initialise` follows init_lora_weights: true, false and "gaussian" here, the inits from
  // the weight or from data (lora_init.h) from `prepared` (InjectContext::shared) for the module at `key`. `key` (the
  // module path) is also what variants matching module names (BD-LoRA) read.
  void add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise,
           const std::string& key = "", const std::map<std::string, at::Tensor>& prepared = {});
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

  // What variants build on: the A and B modules of a Linear/Conv1D adapter (replaceable, e.g. by BD-LoRA's
  // block-diagonal ones), its dropout probability, the wrapped weight as stored, the layer's shape, and AdapterDict
  // children of the layer created on first use (e.g. KaSA's "lora_diag"), registered after PEFT's own.
  torch::nn::Module& lora_A_module(const std::string& adapter) const { return lora_A_->module(adapter); }
  torch::nn::Module& lora_B_module(const std::string& adapter) const { return lora_B_->module(adapter); }
  void replace_lora_A(const std::string& adapter, std::shared_ptr<torch::nn::Module> module);
  void replace_lora_B(const std::string& adapter, std::shared_ptr<torch::nn::Module> module);
  double dropout(const std::string& adapter) const { return dropout_.at(adapter); }
  // x with the adapter's dropout (in training mode), as PEFT's lora_dropout[adapter](x).
  at::Tensor dropped(const std::string& adapter, const at::Tensor& x) const;
  at::Tensor weight() const { return base_weight(); }
  bool fan_in_fan_out() const { return fan_in_fan_out_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  AdapterDict& variant_dict(const std::string& name);
  const AdapterDict& variant_dict(const std::string& name) const;
  const LoraVariant* variant(const std::string& adapter) const;
  const std::shared_ptr<AdapterState>& state() const { return state_; }
  // Plain LoRA's ΔW (scaling·B·A in the base weight's layout), whatever the adapter's variant.
  at::Tensor plain_delta_weight(const std::string& adapter) const;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  friend void initialise_lora_layer(LoraLayer&, const std::string&, const nlohmann::json&, const std::string&,
                                    const std::map<std::string, at::Tensor>&);
  at::Tensor weight_out_in() const;      // the same as [out, in] (Conv1D transposed)
  at::Tensor dora_weight_norm(const at::Tensor& lora_weight, double scale) const;
  void merge_lora_bias(const std::string& adapter, double sign);

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
  std::set<std::string> lora_bias_;  // adapters whose B has a bias
  std::map<std::string, at::Tensor> merged_weight_norm_;  // DoRA: the norm at merge time, needed to unmerge
  std::map<std::string, std::shared_ptr<LoraVariant>> variants_;
};

}  // namespace peft4j::tuners
