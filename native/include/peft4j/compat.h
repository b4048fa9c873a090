// The one place where libtorch 1.13 (Debian, CPU) and libtorch 2.x (CUDA builds) differ for us.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#define PEFT4J_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace peft4j::compat {

// scaled_dot_product_attention exists from 2.0; 1.13 composes it from matmul + softmax.
// `mask` is additive (0 or -inf, broadcastable to [B, H, Tq, Tk]) or undefined.
inline at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const at::Tensor& mask, double scale) {
#if PEFT4J_TORCH_AT_LEAST(2, 1)
  return at::scaled_dot_product_attention(q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt,
                                          0.0, false, scale);
#else
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  if (mask.defined()) scores = scores + mask;
  return at::matmul(at::softmax(scores, -1, at::kFloat).to(q.scalar_type()), v);
#endif
}

}  // namespace peft4j::compat
