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
