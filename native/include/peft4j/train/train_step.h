// One optimizer step of a PeftModel, shared by the trainer and the parity runner's step check. It is a function of
// (model, micro-batches, optimizer) only, so a data-parallel version adds its gradient all-reduce between the
// backward passes and the update without touching the rest of the trainer.
#pragma once

#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::train {

struct OptimizerSettings {
  std::string name = "adamw";  // "adamw" (torch.optim.AdamW) or "sgd" (torch.optim.SGD)
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double momentum = 0.0;
};

// torch's AdamW or SGD over `params`, with torch.optim's update rules.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params,
                                                        const OptimizerSettings& settings);

// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate);

// Adds `params` as a parameter group of their own with `learning_rate`, the other options as the first group's.
void add_parameter_group(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& params, double learning_rate);

struct StepOptions {
  int64_t step = 1;             // the step's number (1-based), for messages and the tuners' hooks
  double max_grad_norm = 0.0;   // clip the total gradient norm to this; 0: no clipping
  bool tuner_hooks = true;      // PeftModel::after_optimizer_step (AdaLoRA's rank allocation) after the update
  bool gradient_checkpointing = false;  // recompute each layer in the backward pass (models::GradientCheckpointing)
};

struct StepResult {
  double loss = 0;       // the mean loss over every loss item of the step's micro-batches
  double grad_norm = 0;  // the total gradient norm before clipping
};

// Forward and backward over each micro-batch (in train mode; labels given), gradients accumulating, then clipping,
// the optimizer update and the tuners' hooks; the gradients are cleared afterwards. Each micro-batch's mean loss
// counts by its share of the step's loss items (train::loss_items), as transformers' Trainer normalises by
// num_items_in_batch: k micro-batches give the gradient of one batch holding them all.
// A non-finite loss -> Error(Numerical) "loss is nan at step N" before any parameter changes.
StepResult optimizer_step(tuners::PeftModel& model, torch::optim::Optimizer& optimizer,
                          const std::vector<models::ModelInputs>& micro_batches, const StepOptions& options);

}  // namespace peft4j::train
