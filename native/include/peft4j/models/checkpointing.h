// Gradient checkpointing (torch.utils.checkpoint, reentrant form): a layer runs without keeping its activations and
// is run again, with the same random state, when the backward pass reaches it — memory for compute.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::models {

// While alive, the decoder/encoder layers of llama, qwen2, mistral, gpt2 and bert run checkpointed on this thread
// whenever autograd records and no prefix or cache is passed. Scopes nest; the previous setting comes back at the end.
class GradientCheckpointing {
 public:
  explicit GradientCheckpointing(bool enabled);
  ~GradientCheckpointing();
  GradientCheckpointing(const GradientCheckpointing&) = delete;
  GradientCheckpointing& operator=(const GradientCheckpointing&) = delete;

 private:
  bool previous_;
};

// layer(input), checkpointed when a GradientCheckpointing scope is on and autograd records; otherwise a plain call.
// `layer` must own what it reads besides `input` (capture by value): the backward pass calls it again.
at::Tensor run_layer(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& input);

// The decoder layers' self-attention loop of llama-like and gpt2 models: each layer reads `past` (prefixes or a
// cache) and fills `present` when given; without either, each runs through run_layer (a checkpoint carries only
// the hidden state).
template <typename Layer, typename Context>
at::Tensor run_decoder_layers(const std::vector<std::shared_ptr<Layer>>& layers, at::Tensor hidden,
                              const Context& context, const PastKeyValues* past,
                              std::optional<PastKeyValues>& present) {
  for (size_t i = 0; i < layers.size(); ++i) {
    auto layer = layers[i];
    if (past || present) {
      hidden = layer->forward(hidden, context, past ? past->self_attn[i] : LayerKV{},
                              present ? &present->self_attn[i] : nullptr);
    } else {
      hidden = run_layer([layer, context](const at::Tensor& h) { return layer->forward(h, context, LayerKV{}, nullptr); },
                         hidden);
    }
  }
  return hidden;
}

}  // namespace peft4j::models
