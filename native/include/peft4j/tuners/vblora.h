// VB-LoRA (Li et al., NeurIPS 2024) as PEFT 0.21 implements it: the LoRA factors of every layer are assembled from
// one vector bank [num_vectors, vector_length] shared by the whole model. Each sub-vector of A [r, in] and
// B [out, r] is a softmax-weighted mix of the top-k bank vectors its logits select; ΔW = B A (no scaling).
// The bank lives on the model ("base_model.vblora_vector_bank.<adapter>", saved as "base_model.vblora_vector_bank")
// and each layer holds the same tensor under "vblora_vector_bank", so its parameter name is PEFT's; the layer's
// own tensors keep PEFT's names (vblora_logits_A.<adapter>, vblora_logits_B.<adapter>).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class VBLoraLayer : public LinearDeltaLayer {
 public:
  VBLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "VBLORA"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

  // Adds an adapter mixing vectors of `bank` (the model's tensor itself, shared with every layer).
  void add(const std::string& adapter, const at::Tensor& bank, const nlohmann::json& config, bool initialise);

  // A [r, in] and B [out, r] assembled from the bank.
  std::pair<at::Tensor, at::Tensor> lora_matrices(const std::string& adapter, bool f32 = false) const;
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]).
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> vblora_logits_A_ = adapter_dict("vblora_logits_A");
  std::shared_ptr<AdapterDict> vblora_logits_B_ = adapter_dict("vblora_logits_B");
  std::shared_ptr<AdapterDict> vblora_vector_bank_ = adapter_dict("vblora_vector_bank");
  std::map<std::string, int64_t> topk_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
