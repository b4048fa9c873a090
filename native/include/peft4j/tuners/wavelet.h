// The inverse 2-D discrete wavelet transform WaveFT reconstructs ΔW with: one level of ptwt's waverec2d (the
// transposed convolution of the four sub-bands with the outer products of the reconstruction filters, stride 2,
// then (2L - 3) / 2 entries cropped from every side), over the wavelet families PEFT 0.21's minimal wavelet table
// carries (PyWavelets' reconstruction low-pass filters).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace peft4j::tuners::wavelet {

// The filter length L of `family` ("db1".."db10", "sym2".."sym10", "coif1".."coif4"), nullopt for a family the table
// lacks.
std::optional<int64_t> filter_length(const std::string& family);

// The [2H + L - 2 - 2·((2L - 3) / 2), 2W + ...] reconstruction of one level from the approximation `a` and the
// horizontal, vertical and diagonal details `h`, `v`, `d` (each [H, W]), in their dtype and device; differentiable.
at::Tensor waverec2d(const at::Tensor& a, const at::Tensor& h, const at::Tensor& v, const at::Tensor& d,
                     const std::string& family);

}  // namespace peft4j::tuners::wavelet
