// Multi-head parallel adapter (He et al., ICLR 2022, "Towards a unified view of parameter-efficient transfer
// learning"; peft_type "MH_PARALLEL_ADAPTER", a peft4j value: HF PEFT and AdapterHub have no such method). In every
// self-attention layer, for each attention head i,
//
//   Δh_i = s · (f(x·W_down^(i) + b_down^(i))·W_up^(i) + b_up^(i))
//
// is added to head i's attention output (the merged heads, before the output projection), x being the attention
// input, the hidden state the q/k/v projections read. W_down^(i): d × r, W_up^(i): r × head_dim. s scales the whole
// up output, its bias included, as BOTTLENECK's scaling does (the module is a BottleneckModule, bottleneck.h).
//
// Placement (models::self_attention_layers, AttentionHooks::set_heads_hook): llama/qwen2/mistral model.layers.N.self_attn
// (before o_proj), gpt2 transformer.h.N.attn (before c_proj), bert bert.encoder.layer.N.attention.self (before
// attention.output.dense), t5 encoder.block.N.layer.0.SelfAttention and decoder.block.N.layer.0.SelfAttention (before
// o; x is the layer-normed hidden state). Cross-attention gets none.
//
//   bottleneck_size  r, the bottleneck width per head (default 8)
//   non_linearity    f, a transformers activation name as BOTTLENECK takes it (default "relu")
//   scaling          s: a number (default 1.0) or "learned" (one trainable scalar per layer, initialised to 1)
//   init_weights     "mam_adapter" (default: W_down Kaiming-uniform, b_down, W_up and b_up zero, so an untrained
//                    adapter is the identity) or "bert" (weights N(0, 0.02), biases zero)
//   dropout          on Δh, in training (default 0)
//   leave_out        layer indices without adapter (on T5, encoder and decoder block N alike)
//
// Trainable parameters per adapted layer with H heads: H·(d·r + r) + H·(r·head_dim + head_dim), +1 with learned
// scaling. Each layer's tensors sit on its attention module in the AdapterDict "mh_adapters", keyed by adapter name,
// and are saved without it: "base_model.model.<attention path>.mh_adapters.adapter_down.weight" [H·r, d] (the W_down^(i)
// stacked, as nn.Linear stores them), ".adapter_down.bias" [H·r], ".adapter_up.weight" [H, head_dim, r],
// ".adapter_up.bias" [H, head_dim], ".adapter_scaling" [1] when learned. Cannot be merged: f sits between the
// projections, and Δh reads the attention input while it is added to the attention output, which no weight of the
// base model expresses.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// W_up^(i) of every head at once: [.., H·r] -> [.., H·head_dim], head i's r inputs mapped by weight[i] [head_dim, r]
// plus bias[i]. Zero at construction.
class PerHeadUpProjection : public torch::nn::Module, public models::TensorModule {
 public:
  PerHeadUpProjection(int64_t heads, int64_t head_dim, int64_t rank);
  at::Tensor forward(const at::Tensor& input) override;

  at::Tensor weight;  // [H, head_dim, r]
  at::Tensor bias;    // [H, head_dim]
};

}  // namespace peft4j::tuners
