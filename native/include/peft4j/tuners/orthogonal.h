// Helpers shared by the multiplicative (orthogonal) methods OFT, BOFT, HRA and RoAd (and PSOFT's rotation): they
// transform the wrapped weight by a matrix instead of adding a low-rank delta, so they share the Cayley transform, the
// bias check and reading the wrapped weight.
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/models/model.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners::orthogonal {

// The Cayley transform of a batch of skew-symmetric matrices S [b, n, n]: X with X (I + S) = I - S, solved as
// PEFT does (torch.linalg.solve(I + S, I - S, left=False)), in at least float32; orthogonal for every
// skew-symmetric S.
at::Tensor cayley(const at::Tensor& skew);
// The skew-symmetric matrices [b, n, n] whose strict upper triangles (row-major, torch.triu_indices order) are the
// rows of `vec` [b, n(n-1)/2].
at::Tensor skew(const at::Tensor& vec, int64_t n);
// PEFT's truncated Cayley–Neumann series for skew-symmetric Q [b, n, n] (OFT v2, also PSOFT's): with k terms,
// I + 2Q + 2Q² + ... + 2Q^(k-2) + Q^(k-1) for k >= 4; k = 3 gives the same as k = 4, k = 2 gives I + 2Q and fewer
// terms the identity.
at::Tensor cayley_neumann(const at::Tensor& q, int64_t terms);

// Error(InvalidArgument) naming the field unless the config's "bias" is one of PEFT's modes for the method:
// "none", "all" or `only` (e.g. "oft_only": the biases of the wrapped modules are trained).
void check_bias(const nlohmann::json& config, const std::string& peft_type, const std::string& only);

// The wrapped module's weight and bias (undefined when it has none).
at::Tensor base_weight(const torch::nn::Module& base);
at::Tensor base_bias(const torch::nn::Module& base);

}  // namespace peft4j::tuners::orthogonal
