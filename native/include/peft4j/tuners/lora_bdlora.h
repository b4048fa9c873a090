// BD-LoRA (PEFT 0.21's use_bdlora, BdLoraConfig): LoRA whose A or B is block-diagonal, so that a LoRA layer shards
// like its base layer under tensor parallelism (A block-diagonal for row-sharded modules, B for column-sharded ones).
// Which factor is block-diagonal follows the module name (BdLoraConfig.target_modules_bd_a / _bd_b, substring match).
#pragma once

#include <torch/nn/module.h>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// PEFT's BlockDiagonalLinear: `weight` [out, in / nblocks] holds the nblocks diagonal blocks [out / nblocks,
// in / nblocks] stacked along dim 0; the forward multiplies each input block by its own block.
class BlockDiagonalLinear : public torch::nn::Module, public models::TensorModule {
 public:
  BlockDiagonalLinear(int64_t in_features, int64_t out_features, int64_t nblocks);
  at::Tensor forward(const at::Tensor& x) override;
  // The blocks on the diagonal of a zero [out, in] matrix: the weight as a plain LoRA factor.
  at::Tensor as_matrix() const;

  at::Tensor weight;

 private:
  int64_t in_features_, out_features_, nblocks_;
};

}  // namespace peft4j::tuners
