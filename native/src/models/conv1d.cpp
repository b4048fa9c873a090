#include "peft4j/models/conv1d.h"

#include <string>

#include "peft4j/error.h"

namespace peft4j::models {

Conv1DImpl::Conv1DImpl(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0)
    fail(ErrorKind::InvalidArgument, "Conv1D needs positive sizes, got in_features " + std::to_string(in_features) +
                                         " and out_features " + std::to_string(out_features));
  reset();
}

void Conv1DImpl::reset() {
  weight = register_parameter("weight", at::zeros({in_features_, out_features_}));
  bias = register_parameter("bias", at::zeros({out_features_}));
}

at::Tensor Conv1DImpl::forward(const at::Tensor& input) {
  if (input.size(-1) != in_features_)
    fail(ErrorKind::InvalidArgument, "Conv1D expects inputs with " + std::to_string(in_features_) +
                                         " features in the last dimension, got " + std::to_string(input.size(-1)));
  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = out_features_;
  return at::addmm(bias, input.reshape({-1, in_features_}), weight).view(out_shape);
}

}  // namespace peft4j::models
