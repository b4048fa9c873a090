// The one place where libtorch 1.13 (Debian, CPU) and libtorch 2.x (CUDA builds) differ for us.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <limits>

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

// Attention under a boolean mask (true = attend, broadcastable to [B, H, Tq, Tk]; undefined = attend to all).
// A query row that may attend to no key (a padding position under left padding) yields zeros, as SDPA does
// from torch 2.5 on; earlier versions and the composed 1.13 path would give NaN there. Attention dropout with
// probability `dropout_p` (training only; callers pass 0 in eval mode).
inline at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& allowed, double scale, double dropout_p = 0.0) {
  at::Tensor has_key;
  at::Tensor additive;
  if (allowed.defined()) {
    has_key = allowed.any(-1, /*keepdim=*/true);
    // Fully masked rows attend to everything (finite result) and are zeroed afterwards.
    additive = at::zeros(allowed.sizes(), q.options())
                   .masked_fill(allowed.logical_not().logical_and(has_key), -std::numeric_limits<double>::infinity());
  }
  at::Tensor out;
  if (dropout_p > 0.0) {
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
    if (additive.defined()) scores = scores + additive;
    at::Tensor weights = at::dropout(at::softmax(scores, -1, at::kFloat), dropout_p, /*train=*/true);
    out = at::matmul(weights.to(q.scalar_type()), v);
  } else {
    out = scaled_dot_product_attention(q, k, v, additive, scale);
  }
  return has_key.defined() ? out.masked_fill(has_key.logical_not(), 0) : out;
}

// Autocast of CUDA ops to `dtype` (the trainer's bf16) on this thread; 2.4 made the calls take a device type.
// Disabling also drops autocast's cache of cast weights.
inline void set_cuda_autocast(bool enabled, at::ScalarType dtype) {
#if PEFT4J_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
#else
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(enabled);
#endif
  if (!enabled) at::autocast::clear_cache();
}

}  // namespace peft4j::compat
