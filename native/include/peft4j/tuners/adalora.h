// AdaLoRA (Zhang et al., ICLR 2023) as PEFT 0.21 implements it: a LoRA in SVD form, ΔW = B (A ⊙ E) · α / ranknum,
// with an orthogonality regulariser on A and B added to the loss and a rank allocator that prunes singular values
// (entries of E) by a smoothed sensitivity score on a cubic budget schedule. The layer keeps PEFT's names
// (lora_A.<adapter>, lora_E.<adapter>, lora_B.<adapter>), so parameters and saved keys equal PEFT's.
#pragma once

#include <array>
#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class AdaLoraLayer : public LinearDeltaLayer {
 public:
  AdaLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "ADALORA"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

  // Adds an adapter of rank r. `ranknum` is PEFT's divisor (the initial rank init_r, kept when a saved rank pattern
  // shrinks r); `random_init` false starts E at zero (init_lora_weights true) and true draws A, E, B from N(0, 1).
  void add(const std::string& adapter, int64_t r, int64_t ranknum, double lora_alpha, double dropout, bool random_init);

  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]).
  at::Tensor delta_weight(const std::string& adapter) const override;
  at::Tensor lora_a(const std::string& adapter) const { return lora_A_->parameter(adapter); }  // [r, in]
  at::Tensor lora_e(const std::string& adapter) const { return lora_E_->parameter(adapter); }  // [r, 1]
  at::Tensor lora_b(const std::string& adapter) const { return lora_B_->parameter(adapter); }  // [out, r]

  // The rank allocator's state for this layer (PEFT's RankAllocator keeps it per parameter name): after each step
  // the sensitivity |p · ∂L/∂p| of A, E and B is smoothed (beta1) and its uncertainty tracked (beta2).
  void update_importance(const std::string& adapter, double beta1, double beta2);
  void reset_importance(const std::string& adapter) { importance_.erase(adapter); }
  // Score of each singular triplet: E's score plus the mean scores of its row of A and its column of B; [r].
  at::Tensor triplet_importance(const std::string& adapter) const;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Importance {
    at::Tensor smoothed;     // exp_avg_ipt
    at::Tensor uncertainty;  // exp_avg_unc
  };

  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> lora_A_ = adapter_dict("lora_A");
  std::shared_ptr<AdapterDict> lora_B_ = adapter_dict("lora_B");
  std::shared_ptr<AdapterDict> lora_E_ = adapter_dict("lora_E");
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> scaling_;
  std::map<std::string, double> dropout_;
  // PEFT's ranknum: a frozen one-element tensor, neither trained nor saved, divided by as a tensor.
  std::map<std::string, at::Tensor> ranknum_;
  std::map<std::string, std::array<Importance, 3>> importance_;  // A, E, B
};

}  // namespace peft4j::tuners
