#include "peft4j/tuners/dense_delta.h"

namespace peft4j::tuners {

at::Tensor DenseDeltaLayer::delta_weight(const std::string& adapter) const {
  at::Tensor delta = delta_out_in(adapter);
  return shape_.fan_in_fan_out ? delta.t() : delta;
}

at::Tensor DenseDeltaLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor delta = delta_out_in(adapter);
  return (result + at::linear(x.to(delta.scalar_type()), delta)).to(x.scalar_type());
}

}  // namespace peft4j::tuners
