// Bottleneck adapters (peft_type "BOTTLENECK", a peft4j value: HF PEFT has no such method), with AdapterHub's
// BnConfig field names: Δh = s · up(f(down(z))) on a transformer block's sublayer (see delta_adapter.h for where z is
// read and Δh added).
//
//   mh_adapter / output_adapter   after the attention / after the FFN (both: Houlsby; FFN only: Pfeiffer)
//   reduction_factor              bottleneck width d_m = d_h / reduction_factor (or bottleneck_size = d_m)
//   non_linearity                 f, a transformers activation name ("relu", "swish", "gelu", ...)
//   is_parallel                   reads the FFN's input and adds to its output (He et al.'s parallel adapter)
//   scaling                       s: a number, "learned" (one scalar) or "channel" (one per hidden unit)
//   original_ln_before            BERT only: the adapter reads LN(h + residual) and the result is re-normalised
//   original_ln_after, residual_before_ln  must be true (the only placement peft4j's blocks expose)
//   init_weights                  "mam_adapter" (default: down Kaiming-uniform, up zero, so an untrained adapter is
//                                 the identity), "bert" (N(0, 0.02)), "houlsby" (truncated N(0, 0.01))
//   use_gating                    Δh times g = mean over the sequence of sigmoid(gate(z)), gate a Linear(d_h, 1) (per
//                                 batch row: UniPELT's gate). A mean over the whole sequence cannot be extended token
//                                 by token, so a gated adapter runs without KV cache (Tuner::supports_kv_cache)
//   leave_out, adapter_drop       AdapterDrop: no adapter on the listed layers; random skipping in training
//   phm_layer                     Compacter: down/up are PHM layers (compacter.h)
//   fusion                        AdapterFusion over the named adapters instead of a new bottleneck (adapter_fusion.h)
//   average, average_weights,     AdapterHub's Average over the named adapters instead of a new bottleneck
//   normalize_weights             (composition.h)
//
// Trainable parameters per adapted sublayer: 2·d_h·d_m + d_m + d_h (+1 learned / +d_h channel scaling, +d_h + 1
// gate). Saved keys
// are AdapterHub's names under the wrapped module, adapter name removed:
// "base_model.model.<module>.adapters.adapter_down.weight". A non-linearity sits between down and up, so these
// adapters cannot be merged into the base weights.
#pragma once

#include <string>

#include "peft4j/models/bert.h"
#include "peft4j/tuners/delta_adapter.h"

namespace peft4j::tuners {

class BottleneckModule : public DeltaModule {
 public:
  // `down` maps d_h -> d_m and `up` d_m -> d_h (Linear or PHM layers, called as one-tensor modules).
  BottleneckModule(std::shared_ptr<torch::nn::Module> down, std::shared_ptr<torch::nn::Module> up,
                   const std::string& non_linearity, const nlohmann::json& scaling, int64_t width);
  at::Tensor delta(const at::Tensor& z) override;
  void set_dropout(double p) { dropout_ = p; }  // on Δh, in training
  // Registers "gate", a Linear(d_h, 1) whose sequence-mean sigmoid scales Δh (use_gating).
  void set_gate(std::shared_ptr<torch::nn::Module> gate);

 private:
  double dropout_ = 0.0;
  models::Activation activation_;
  double scaling_ = 1.0;
  at::Tensor learned_scaling_;  // "adapter_scaling" when scaling is learned
  std::shared_ptr<torch::nn::Module> gate_;
};

// UniPELT's gate (Mao et al. 2022, AdapterHub's use_gating): sigmoid(x·weightᵀ + bias) averaged over the sequence,
// [B, outputs], from x [B, T, d] (padding positions included, as AdapterHub averages).
at::Tensor sequence_gate(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
// The same with the weight and bias of a Linear.
at::Tensor sequence_gate(const at::Tensor& x, torch::nn::Module& gate);

// The activation named by a non_linearity field (transformers' names and AdapterHub's "leakyrelu");
// Error(InvalidArgument) naming `field` for an unknown name.
models::Activation bottleneck_activation(const std::string& non_linearity, const std::string& field);

// AdapterHub's init_weights for one projection of a bottleneck: bias zero; weight "bert" N(0, 0.02), "houlsby"
// truncated N(0, 0.01), "mam_adapter" Kaiming-uniform (nn.Linear's own) for the down projection and zero for the up
// projection, so that the adapter starts as the identity.
void init_bottleneck_projection(const at::Tensor& weight, const at::Tensor& bias, const std::string& how, bool up);

// The bottleneck width of `config` for hidden width `width`: bottleneck_size, else width / reduction_factor (>= 1).
int64_t bottleneck_width(const nlohmann::json& config, int64_t width);

}  // namespace peft4j::tuners
