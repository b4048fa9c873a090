#include "peft4j/train/train_step.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/models/checkpointing.h"
#include "peft4j/train/training_data.h"

namespace peft4j::train {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params,
                                                        const OptimizerSettings& s) {
  if (params.empty()) fail(ErrorKind::InvalidArgument, "the model has no trainable parameters to optimize");
  if (s.name == "adamw")
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(s.learning_rate)
                                                             .betas({s.beta1, s.beta2})
                                                             .eps(s.epsilon)
                                                             .weight_decay(s.weight_decay));
  if (s.name == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(s.learning_rate).momentum(s.momentum).weight_decay(s.weight_decay));
  fail(ErrorKind::InvalidArgument, "optimizer must be adamw or sgd, got '" + s.name + "'");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(learning_rate);
}

void add_parameter_group(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& params, double learning_rate) {
  std::unique_ptr<torch::optim::OptimizerOptions> options = optimizer.param_groups().front().options().clone();
  options->set_lr(learning_rate);
  optimizer.add_param_group(torch::optim::OptimizerParamGroup(params, std::move(options)));
}

namespace {

std::vector<at::Tensor> parameters_of(torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) out.push_back(p);
  return out;
}

double total_norm(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  at::Tensor sum;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    at::Tensor n = p.grad().detach().to(at::kFloat).norm(2).pow(2);
    sum = sum.defined() ? sum + n : n;
  }
  return sum.defined() ? std::sqrt(sum.item<double>()) : 0.0;
}

}  // namespace

StepResult optimizer_step(tuners::PeftModel& model, torch::optim::Optimizer& optimizer,
                          const std::vector<models::ModelInputs>& micro_batches, const StepOptions& options) {
  if (micro_batches.empty()) fail(ErrorKind::InvalidArgument, "an optimizer step needs at least one batch");
  std::vector<int64_t> items;
  int64_t all_items = 0;
  for (const auto& batch : micro_batches) {
    if (!batch.labels.defined()) fail(ErrorKind::InvalidArgument, "a training batch needs labels");
    items.push_back(loss_items(batch, model.task()));
    all_items += items.back();
  }
  model.train();
  optimizer.zero_grad();
  models::GradientCheckpointing checkpointing(options.gradient_checkpointing);
  StepResult result;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    // A lone micro-batch weighs exactly 1, so its loss and gradient are bit for bit those of a plain step.
    const double weight = micro_batches.size() == 1 ? 1.0
                          : all_items > 0          ? static_cast<double>(items[i]) / static_cast<double>(all_items)
                                                   : 1.0 / static_cast<double>(micro_batches.size());
    at::Tensor loss = model.forward(micro_batches[i]).loss;
    if (!loss.defined()) fail(ErrorKind::Internal, "the model computed no loss from the batch's labels");
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      optimizer.zero_grad();
      fail(ErrorKind::Numerical, std::string("loss is ") + (std::isnan(value) ? "nan" : "inf") + " at step " +
                                     std::to_string(options.step));
    }
    result.loss += weight * value;
    (weight == 1.0 ? loss : loss * weight).backward();
  }
  std::vector<at::Tensor> params = parameters_of(optimizer);
  result.grad_norm = options.max_grad_norm > 0 ? torch::nn::utils::clip_grad_norm_(params, options.max_grad_norm)
                                               : total_norm(params);
  optimizer.step();
  if (options.tuner_hooks) model.after_optimizer_step(options.step);
  optimizer.zero_grad();
  return result;
}

}  // namespace peft4j::train
