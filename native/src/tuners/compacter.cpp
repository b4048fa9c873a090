#include "peft4j/tuners/compacter.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Xavier (Glorot) initialisation of each of the n slices [fan_in, fan_out], as AdapterHub's init_W.
void init_slices(at::Tensor& t, const std::string& how, double range) {
  for (int64_t i = 0; i < t.size(0); ++i) {
    at::Tensor slice = t[i];
    double fan = static_cast<double>(slice.size(0) + slice.size(1));
    if (how == "glorot-uniform") {
      double bound = std::sqrt(6.0 / fan);
      slice.uniform_(-bound, bound);
    } else if (how == "glorot-normal") {
      slice.normal_(0.0, std::sqrt(2.0 / fan));
    } else {
      slice.normal_(0.0, range);
    }
  }
}

}  // namespace

void check_phm_config(const nlohmann::json& config) {
  if (config_bool(config, "shared_W_phm"))
    fail(ErrorKind::Unsupported, "BOTTLENECK config field 'shared_W_phm' = true is not supported (slow weights are per layer)");
  if (config_bool(config, "factorized_phm_rule"))
    fail(ErrorKind::Unsupported, "BOTTLENECK config field 'factorized_phm_rule' = true is not supported");
  if (!config_bool(config, "learn_phm") && !config_bool(config, "shared_phm_rule"))
    fail(ErrorKind::Unsupported, "BOTTLENECK config field 'learn_phm' = false needs shared_phm_rule = true");
  std::string init = config_string(config, "hypercomplex_nonlinearity");
  if (init != "glorot-uniform" && init != "glorot-normal" && init != "normal")
    fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'hypercomplex_nonlinearity' is '" + init +
                                         "' (glorot-uniform, glorot-normal, normal)");
  std::string c_init = config_string(config, "phm_c_init");
  if (c_init != "normal" && c_init != "uniform")
    fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'phm_c_init' is '" + c_init + "' (normal, uniform)");
  if (config_int(config, "phm_dim") < 1 || config_int(config, "phm_rank") < 1)
    fail(ErrorKind::InvalidArgument, "BOTTLENECK config fields 'phm_dim' and 'phm_rank' must be positive");
}

void check_phm_widths(const nlohmann::json& config, int64_t hidden, int64_t bottleneck) {
  int64_t n = config_int(config, "phm_dim");
  if (hidden % n != 0 || bottleneck % n != 0)
    fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'phm_dim' = " + std::to_string(n) +
                                         " must divide the hidden width " + std::to_string(hidden) +
                                         " and the bottleneck width " + std::to_string(bottleneck));
}

at::Tensor new_phm_rule(const nlohmann::json& config, const at::TensorOptions& options) {
  int64_t n = config_int(config, "phm_dim");
  at::Tensor rule = at::empty({n, n, n}, options);
  if (config_string(config, "phm_c_init") == "normal")
    rule.normal_(0.0, config_double(config, "phm_init_range"));
  else
    rule.uniform_(-1.0, 1.0);
  return rule;
}

PhmLinear::PhmLinear(int64_t in, int64_t out, const nlohmann::json& config, const at::Tensor& shared_rule)
    : n_(config_int(config, "phm_dim")), factorized_(config_bool(config, "factorized_phm_W")) {
  at::NoGradGuard no_grad;
  const std::string init = config_string(config, "hypercomplex_nonlinearity");
  const double range = config_double(config, "phm_init_range");
  if (factorized_) {
    int64_t rank = config_int(config, "phm_rank");
    at::Tensor left = at::empty({n_, in / n_, rank}), right = at::empty({n_, rank, out / n_});
    init_slices(left, init, range);
    init_slices(right, init, range);
    register_parameter("W_left", left);
    register_parameter("W_right", right);
  } else {
    at::Tensor w = at::empty({n_, in / n_, out / n_});
    init_slices(w, init, range);
    register_parameter("W", w);
  }
  if (config_bool(config, "phm_bias")) register_parameter("b", at::zeros({out}));
  if (shared_rule.defined())
    rule_ = shared_rule;
  else
    register_parameter("phm_rule", new_phm_rule(config, at::TensorOptions()));
}

at::Tensor PhmLinear::weight() const {
  auto params = named_parameters(false);
  at::Tensor w = factorized_ ? at::bmm(params["W_left"], params["W_right"]) : params["W"];
  at::Tensor rule = rule_.defined() ? rule_ : params["phm_rule"];
  // Σ_i A_i ⊗ W_i: element (a·p + k, b·q + l) = Σ_i A_i[a, b] W_i[k, l].
  int64_t p = w.size(1), q = w.size(2);
  return at::einsum("iab,ikl->akbl", {rule.to(w.scalar_type()), w}).reshape({n_ * p, n_ * q});
}

at::Tensor PhmLinear::forward(const at::Tensor& x) {
  at::Tensor y = at::matmul(x, weight());
  auto params = named_parameters(false);
  if (const auto* b = params.find("b")) y = y + *b;
  return y;
}

void PhmLinear::zero_output() {
  at::NoGradGuard no_grad;
  auto params = named_parameters(false);
  params[factorized_ ? "W_right" : "W"].zero_();
  if (const auto* b = params.find("b")) b->zero_();
}

}  // namespace peft4j::tuners
