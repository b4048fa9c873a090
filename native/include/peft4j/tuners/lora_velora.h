// VeLoRA (arXiv:2405.17991) as PEFT 0.21's velora_config: in training, the A projection keeps for its backward only
// a compressed copy of its input — each token split into num_groups groups of ceil(in / num_groups) features, each
// group projected onto one unit vector `lora_velora_embed` (the mean group of the batch, updated every training
// forward or once, or random) — and the weight gradient of A uses the input reconstructed from it, times `scale`.
// The forward, the input gradient, evaluation and merging are plain LoRA's. The vector is saved with the adapter
// (PEFT's persistent buffer "lora_velora_embed").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace peft4j::tuners {

// PEFT's VeloraFunction: F.linear(input, weight) whose backward gives the input its exact gradient and the weight
// grad_output_2dᵀ · reconstruct(compress(input, embed)) · scale.
at::Tensor velora_linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& embed, int64_t num_groups,
                         double scale);

// The unit vector a batch's mean group gives (PEFT's _normalize_projection of the mean over tokens and groups, in
// f32; an all-zero mean gives the normalised ones vector).
at::Tensor velora_batch_projection(const at::Tensor& x, int64_t num_groups);

}  // namespace peft4j::tuners
