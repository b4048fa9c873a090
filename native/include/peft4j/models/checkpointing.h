// Gradient checkpointing (torch.utils.checkpoint, reentrant form): a layer runs without keeping its activations and
// is run again, with the same random state, when the backward pass reaches it — memory for compute.
#pragma once

#include <ATen/ATen.h>

#include <functional>

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

}  // namespace peft4j::models
