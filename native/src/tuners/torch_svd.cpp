#include "peft4j/tuners/torch_svd.h"

namespace peft4j::tuners {

namespace {

at::Tensor orthonormal_basis(const at::Tensor& X) { return std::get<0>(at::linalg_qr(X)); }

// LAPACK's gesdd crossover: at or above it a matrix with min(m, n) = k is first reduced by QR / LQ.
int64_t crossover(int64_t k) { return k * 11 / 6; }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> torch_linalg_svd(const at::Tensor& A, bool full_matrices) {
  const int64_t m = A.size(0), n = A.size(1);
  if (m >= n || n < crossover(m)) return at::linalg_svd(A, full_matrices);
  int64_t height = m;
  while (crossover(height) <= n) ++height;
  at::Tensor padded = at::cat({A, at::zeros({height - m, n}, A.options())});
  auto [U, S, Vh] = at::linalg_svd(padded, full_matrices);
  return {U.slice(0, 0, m).slice(1, 0, m), S.slice(0, 0, m), full_matrices ? Vh : Vh.slice(0, 0, m)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(const at::Tensor& input, int64_t q, int64_t niter,
                                                           std::optional<at::Generator> generator) {
  const bool wide = input.size(0) < input.size(1);
  at::Tensor A = wide ? input.t() : input;
  at::Tensor R = at::randn({A.size(1), q}, generator ? c10::optional<at::Generator>(*generator) : c10::nullopt,
                           A.options().device(at::kCPU))
                     .to(A.device());
  // get_approximate_basis: Q spans A's range, refined by niter subspace iterations.
  at::Tensor Q = orthonormal_basis(at::matmul(A, R));
  for (int64_t i = 0; i < niter; ++i) {
    Q = orthonormal_basis(at::matmul(A.t(), Q));
    Q = orthonormal_basis(at::matmul(A, Q));
  }
  auto [U, S, Vh] = torch_linalg_svd(at::matmul(Q.t(), A), /*full_matrices=*/false);
  at::Tensor V = Vh.t();
  U = at::matmul(Q, U);
  if (wide) std::swap(U, V);
  return {U, S, V};
}

}  // namespace peft4j::tuners
