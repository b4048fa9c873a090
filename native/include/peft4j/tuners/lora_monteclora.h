// MonteCLoRA (Monte Carlo LoRA) as PEFT 0.21's monteclora_config: in training, each forward draws num_samples
// perturbations of Aᵀ (Gaussian, with a covariance from a Wishart draw scaled by the learned std_prior) and a
// weighting of them (a softmax of a Dirichlet approximation around the learned expert_weights_prior), and uses the
// weighted mean as A. Evaluation and merging use A itself. The sampler's parameters and its last draws (buffers
// gaussian_var_prior, expert_weights) are saved with the adapter under PEFT's names (lora_monteclora_sampler.*).
//
// The draws come from libtorch's generator: training is stochastic here as in PEFT, and the two cannot give the same
// samples. Unlike PEFT, draws are made per forward rather than buffer_size at a time (the same distribution, without
// holding buffer_size · num_samples · in · r numbers per layer).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace peft4j::tuners {

class PeftModel;

// PEFT's MontecloraSampler: the variational parameters of one adapter on one layer.
class MontecloraSampler : public torch::nn::Module {
 public:
  MontecloraSampler(int64_t in_features, int64_t out_features, int64_t num_samples, bool use_entropy,
                    double dirichlet_prior, double sample_scaler, double kl_loss_weight, const at::TensorOptions& options,
                    bool initialise);

  // One draw from standard normal z_mvn [num_samples, in, r], a Bartlett factor z_wishart [r, r] (Wishart(r, I)) and
  // z_dirichlet [num_samples]: the perturbations [num_samples, in, r] and their weights [num_samples]; the covariance
  // and the weights drawn become the buffers gaussian_var_prior and expert_weights, as PEFT's forward sets them.
  std::pair<at::Tensor, at::Tensor> sample(const at::Tensor& z_mvn, const at::Tensor& z_wishart,
                                           const at::Tensor& z_dirichlet);
  // The same with draws from libtorch's default generator.
  std::pair<at::Tensor, at::Tensor> forward();
  // PEFT's get_variational_loss: (kl_loss_weight · (KL_dirichlet + KL_wishart + KL_gaussian), entropy) in training,
  // (0, 0) otherwise.
  std::pair<at::Tensor, at::Tensor> variational_loss() const;

  at::Tensor std_prior, expert_weights_prior, gaussian_var_prior, expert_weights;

 private:
  void record(at::Tensor& buffer, at::Tensor& last, const at::Tensor& drawn);

  // The last draws with their graph (the buffers hold their values).
  at::Tensor last_gaussian_var_, last_expert_weights_;
  int64_t in_features_, out_features_, num_samples_;
  bool use_entropy_;
  double dirichlet_prior_, sample_scaler_, kl_loss_weight_;
};

// PEFT's LoraModel._get_monteclora_loss: the mean over MonteCLoRA samplers of `adapters` (default: the active ones)
// of KL + entropy; zero when there is none. PEFT leaves it to the user to add to the task loss; so does peft4j.
at::Tensor monteclora_loss(const PeftModel& model, const std::vector<std::string>& adapters = {});

}  // namespace peft4j::tuners
