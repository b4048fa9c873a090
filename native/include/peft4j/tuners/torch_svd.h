// The SVDs PEFT's PSOFT, AdaMSS and FRoD initialisations take from torch on CPU, with the singular vectors PEFT gets.
// Their signs (and, with full_matrices, the basis of the null space) are LAPACK's choice, and the frozen factors built
// from them — so what a trained adapter means — depend on it. PEFT's x86 torch runs MKL's gesdd, libtorch here the
// reference LAPACK's; both agree except on wide matrices (m < n) with n ≥ ⌊11m/6⌋, where the reference first takes an
// LQ factorisation and MKL, as measured against torch 2.11, bidiagonalises the matrix directly — which the reference
// also does once the matrix is padded with zero rows up to the first height m' with ⌊11m'/6⌋ > n (the padding only
// appends zero singular values).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace peft4j::tuners {

// torch.linalg.svd(A, full_matrices) for a 2-D floating A [m, n]: (U [m, k], S [k], Vh [k, n]) with k = min(m, n),
// or U [m, m] and Vh [n, n] with full_matrices.
std::tuple<at::Tensor, at::Tensor, at::Tensor> torch_linalg_svd(const at::Tensor& A, bool full_matrices);

// torch.svd_lowrank (Halko et al. 2009, Algorithm 5.1, as torch 2.11's torch/_lowrank.py computes it; libtorch has no
// C++ form of it): (U [m, q], S [q], V [n, q]) with A ≈ U diag(S) Vᵀ. The random start R [n', q] (torch transposes a
// wide A first, n' is then m) is drawn on CPU from `generator` — a CPU generator seeded with s gives what torch gives
// after torch.manual_seed(s) — or, without one, from the global generator, then moved to A's device.
std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(const at::Tensor& A, int64_t q, int64_t niter,
                                                           std::optional<at::Generator> generator = std::nullopt);

}  // namespace peft4j::tuners
