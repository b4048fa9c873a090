#include "peft4j/models/checkpointing.h"

#include <ATen/core/Generator.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <mutex>

namespace peft4j::models {

namespace {

thread_local bool checkpointing_on = false;

at::Tensor generator_state(at::Generator& generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// The backward of a checkpointed layer: reruns the layer on the saved input with the random state of the forward
// (dropout draws the same masks), back-propagates through that recomputation — which accumulates the layer's
// parameter gradients as a plain backward would — and hands the input's gradient on.
struct CheckpointBackward : public torch::autograd::Node {
  std::function<at::Tensor(const at::Tensor&)> layer;
  at::Tensor input;
  bool input_requires_grad = false;
  at::Tensor rng_state;

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    at::Tensor x = input.detach().requires_grad_(input_requires_grad);
    at::Generator generator = at::globalContext().defaultGenerator(input.device());
    const at::Tensor now = generator_state(generator);
    set_generator_state(generator, rng_state);
    at::Tensor output;
    {
      at::AutoGradMode record(true);
      output = layer(x);
    }
    set_generator_state(generator, now);
    torch::autograd::backward({output}, {grads[0]});
    return {input_requires_grad ? x.grad() : at::Tensor()};
  }

  void release_variables() override {
    input.reset();
    layer = nullptr;
  }
};

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& input) {
  at::Generator generator = at::globalContext().defaultGenerator(input.device());
  at::Tensor state = generator_state(generator);
  at::Tensor output;
  {
    at::NoGradGuard no_grad;
    output = layer(input);
  }
  auto node = std::shared_ptr<CheckpointBackward>(new CheckpointBackward(), torch::autograd::deleteNode);
  node->layer = layer;
  node->input = input.detach();
  node->input_requires_grad = input.requires_grad();
  node->rng_state = state;
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  torch::autograd::set_history(output, node);
  return output;
}

}  // namespace

GradientCheckpointing::GradientCheckpointing(bool enabled) : previous_(checkpointing_on) { checkpointing_on = enabled; }

GradientCheckpointing::~GradientCheckpointing() { checkpointing_on = previous_; }

at::Tensor run_layer(const std::function<at::Tensor(const at::Tensor&)>& layer, const at::Tensor& input) {
  if (!checkpointing_on || !at::GradMode::is_enabled()) return layer(input);
  return checkpointed(layer, input);
}

}  // namespace peft4j::models
