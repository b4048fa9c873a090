#include "peft4j/tuners/orthogonal.h"

#include <vector>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners::orthogonal {

at::Tensor cayley(const at::Tensor& skew) {
  // PEFT's identity is float32, so half-precision skews are solved in float32.
  at::Tensor s = skew.to(at::promote_types(skew.scalar_type(), at::kFloat));
  at::Tensor eye = at::eye(s.size(-1), s.options()).expand_as(s);
  return at::linalg_solve(eye + s, eye - s, /*left=*/false);
}

at::Tensor skew(const at::Tensor& vec, int64_t n) {
  at::Tensor flat = at::triu_indices(n, n, 1, vec.options().dtype(at::kLong));
  flat = flat[0] * n + flat[1];
  at::Tensor upper = at::zeros({vec.size(0), n * n}, vec.options()).index_copy(1, flat, vec).view({-1, n, n});
  return upper - upper.transpose(-2, -1);
}

at::Tensor cayley_neumann(const at::Tensor& q, int64_t terms) {
  at::Tensor r = at::eye(q.size(-1), q.options()).repeat({q.size(0), 1, 1});
  if (terms > 1) {
    r = at::add(r, q, 2.0);
    if (terms > 2) {
      at::Tensor power = at::bmm(q, q);
      r = at::add(r, power, 2.0);
      for (int64_t i = 3; i < terms - 1; ++i) {
        power = at::bmm(power, q);
        r = at::add(r, power, 2.0);
      }
      power = at::bmm(power, q);
      r = r + power;
    }
  }
  return r;
}

void check_bias(const nlohmann::json& config, const std::string& peft_type, const std::string& only) {
  std::string bias = config_string(config, "bias");
  if (bias != "none" && bias != "all" && bias != only)
    fail(ErrorKind::InvalidArgument, peft_type + " config field 'bias' must be \"none\", \"all\" or \"" + only +
                                         "\", got \"" + bias + "\"");
}

at::Tensor base_weight(const torch::nn::Module& base) { return base.named_parameters(false)["weight"]; }

at::Tensor base_bias(const torch::nn::Module& base) {
  auto params = base.named_parameters(false);
  const auto* bias = params.find("bias");
  return bias ? *bias : at::Tensor();
}

}  // namespace peft4j::tuners::orthogonal
