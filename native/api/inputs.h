// Private to the facade's .cpp files: the checks of the model inputs that cross it, made before any work so that a
// bad input gets an error naming the input and the problem rather than one from deep inside libtorch.
#pragma once

#include <ATen/ATen.h>

#include "peft4j_api.h"

namespace peft4j::api {

// An index-like input (positions, segment ids, class labels) on `device` as int64, or undefined when not given.
// Bool tensors are accepted; floating-point values would be silently truncated, so they are refused.
at::Tensor index_input(const TensorHandle& handle, const char* name, const at::Device& device);

// Token ids [batch, length] on `device` as int64: an integer tensor with two dimensions, at least one row and one
// token, every id in [0, vocab). Undefined when not given, unless `required`.
at::Tensor token_ids(const TensorHandle& handle, const char* name, int64_t vocab, const at::Device& device,
                     bool required);

// An attention mask on `device` as int64, or undefined when not given: any integer, bool or floating-point tensor
// that holds only 0 (padding) and 1 (token), as transformers accepts float masks.
at::Tensor attention_mask(const TensorHandle& handle, const at::Device& device);

}  // namespace peft4j::api
