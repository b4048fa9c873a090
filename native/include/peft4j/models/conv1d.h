// transformers' Conv1D (pytorch_utils.Conv1D), the projection GPT-2 uses: a linear layer whose weight is
// stored transposed, [in_features, out_features], so y = x @ weight + bias. Its own module because LoRA and
// other tuners wrap it (PEFT treats it as a linear layer with fan_in_fan_out=True).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "peft4j/models/model.h"

namespace peft4j::models {

class Conv1DImpl : public torch::nn::Cloneable<Conv1DImpl>, public TensorModule {
 public:
  // Parameters "weight" [in_features, out_features] and "bias" [out_features], zero until loaded.
  Conv1DImpl(int64_t in_features, int64_t out_features);

  void reset() override;
  at::Tensor forward(const at::Tensor& input) override;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  at::Tensor weight;
  at::Tensor bias;

 private:
  int64_t in_features_;
  int64_t out_features_;
};

TORCH_MODULE(Conv1D);

}  // namespace peft4j::models
