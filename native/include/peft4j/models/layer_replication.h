// transformers-style layer replication with shared weights, as PEFT's replicate_layers does for LoRA's
// layer_replication: a layer map [[start, end), ...] lists the original layers that make up the new stack, so
// [[0, 4], [2, 5]] turns layers 0..4 into 0, 1, 2, 3, 2, 3, 4. A repeated layer is a new module whose parameters
// and buffers share storage with the original's (clone_module(share_weights=True)), so that each copy can carry
// its own adapter while the base weights exist once.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace peft4j::models {

using LayerMap = std::vector<std::pair<int64_t, int64_t>>;

// The original index of each new layer; Error(InvalidArgument) naming layer_replication for a range outside
// [0, num_layers) or an empty result.
std::vector<int64_t> replicated_layer_sources(const LayerMap& map, int64_t num_layers);

// Makes every parameter and buffer of `copy` share the storage of `source`'s of the same name (same structure).
void share_weights(torch::nn::Module& copy, const torch::nn::Module& source);

}  // namespace peft4j::models
