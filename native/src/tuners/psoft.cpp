// PSOFT. A and B come from the f32 base weight: psoft_svd "full" is torch.linalg.svd, "lowrank" torch.svd_lowrank
// with psoft_svd_lowrank_niter iterations seeded by random_seed, both with PEFT's singular-vector signs
// (torch_svd.h); with s = α / r and S' = S / s, "psoft_init" gives A = Vhᵀ rows, B = U diag(S'), "pissa_init"
// A = diag(√S') Vh, B = U diag(√S'). They are rebuilt from the weight whenever the adapter is added (a loaded adapter
// included), as PEFT does, and not saved.
#include "peft4j/tuners/psoft.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "peft4j/tuners/config.h"
#include "peft4j/tuners/orthogonal.h"
#include "peft4j/tuners/torch_svd.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's PsoftConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "PSOFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"psoft_alpha", 32}, {"psoft_dropout", 0.0}, {"fan_in_fan_out", false},
    {"ab_svd_init", "psoft_init"}, {"psoft_svd", "full"}, {"psoft_svd_lowrank_niter", 10}, {"random_seed", 0},
    {"psoft_orth", true}, {"psoft_mag_b", true}, {"psoft_mag_a", true}, {"use_cayley_neumann", false},
    {"num_cayley_neumann_terms", 5}, {"cayley_neumann_eps", nullptr}, {"modules_to_save", nullptr},
    {"init_weights", true}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}};

class PsoftTuner : public WrappingTuner<PsoftLayer> {
 public:
  // init_weights true: R = I, so ΔW = 0.
  PsoftTuner() : WrappingTuner({"PSOFT", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/false, "psoft_dropout");
    check_layers_need_target_list(config);
    config_positive_int(config, "r");
    config_double(config, "psoft_alpha");
    config_bool(config, "fan_in_fan_out");
    config_choice(config, "ab_svd_init", {"psoft_init", "pissa_init"});
    config_choice(config, "psoft_svd", {"full", "lowrank"});
    config_int(config, "psoft_svd_lowrank_niter");
    config_int(config, "random_seed");
    config_bool(config, "psoft_orth");
    config_bool(config, "psoft_mag_b");
    config_bool(config, "psoft_mag_a");
    config_bool(config, "init_weights");
    if (config_bool(config, "use_cayley_neumann")) {
      config_positive_int(config, "num_cayley_neumann_terms");
      if (!config["cayley_neumann_eps"].is_null()) {
        const double eps = config_double(config, "cayley_neumann_eps");
        if (!(eps > 0.0 && eps < 1.0))
          fail(ErrorKind::InvalidArgument, "PSOFT config field 'cayley_neumann_eps' must be in (0, 1) when set, got " +
                                               config["cayley_neumann_eps"].dump());
      }
    }
  }

  void add(PsoftLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PsoftTuner>());

}  // namespace

PsoftRotation::PsoftRotation(int64_t size, const nlohmann::json& config)
    : size_(size),
      orth_(config_bool(config, "psoft_orth")),
      neumann_(config_bool(config, "use_cayley_neumann")),
      neumann_terms_(config_int(config, "num_cayley_neumann_terms")) {
  if (!config["cayley_neumann_eps"].is_null()) neumann_eps_ = config_double(config, "cayley_neumann_eps");
  weight_ = register_parameter("weight", orth_ ? at::zeros({size * (size - 1) / 2}) : at::zeros({size, size}));
  if (config_bool(config, "psoft_mag_b")) vector_b_ = register_parameter("vector_b", at::ones({size}));
  if (config_bool(config, "psoft_mag_a")) vector_a_ = register_parameter("vector_a", at::ones({size}));
}

void PsoftRotation::reset(bool init_weights) {
  at::NoGradGuard no_grad;
  if (orth_) {
    if (init_weights)
      weight_.zero_();
    else
      weight_.normal_(0.0, 0.1);
  } else {
    weight_.copy_(at::eye(size_, weight_.options()));
    if (!init_weights) weight_.add_(at::randn_like(weight_) * 0.1);
  }
  if (vector_b_.defined()) vector_b_.fill_(1.0);
  if (vector_a_.defined()) vector_a_.fill_(1.0);
}

at::Tensor PsoftRotation::matrix() const {
  at::Tensor R = weight_;
  if (orth_) {
    at::Tensor Q = orthogonal::skew(weight_.unsqueeze(0), size_);
    if (!neumann_) {
      // PEFT solves R (I − Q) = I + Q: the Cayley transform of −Q in orthogonal::cayley's convention.
      R = orthogonal::cayley(-Q).to(weight_.scalar_type());
    } else {
      if (neumann_eps_) {
        at::Tensor norm = at::linalg_vector_norm(Q, 2);
        if (norm.isfinite().item<bool>() && norm.item<double>() > *neumann_eps_)
          Q = Q * (*neumann_eps_ / (norm + 1e-12));
      }
      R = orthogonal::cayley_neumann(Q, neumann_terms_);
    }
    R = R.squeeze(0);
  }
  if (vector_b_.defined()) R = vector_b_.unsqueeze(1) * R;
  if (vector_a_.defined()) R = R * vector_a_.unsqueeze(0);
  return R;
}

PsoftLayer::PsoftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "PSOFT", /*conv1d=*/false);
  psoft_R_ = register_module("psoft_R", std::make_shared<AdapterDict>());
}

void PsoftLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  const int64_t r = config_int(config, "r");
  if (r > std::min(shape_.in_features, shape_.out_features))
    fail(ErrorKind::InvalidArgument, "PSOFT config field 'r' = " + std::to_string(r) +
                                         " must be at most min(in_features, out_features) = min(" +
                                         std::to_string(shape_.in_features) + ", " +
                                         std::to_string(shape_.out_features) + ")");
  const double scaling = config_double(config, "psoft_alpha") / static_cast<double>(r);
  at::Tensor weight = linear_weight(*base_layer());
  auto rotation = std::make_shared<PsoftRotation>(r, config);
  rotation->to(weight.device(), weight.scalar_type());
  rotation->reset(!initialise || config_bool(config, "init_weights"));

  at::Tensor A, B;
  {
    at::NoGradGuard no_grad;
    at::Tensor W = weight.to(at::kFloat);
    at::Tensor U, S, Vh;
    if (config_string(config, "psoft_svd") == "full") {
      std::tie(U, S, Vh) = torch_linalg_svd(W, /*full_matrices=*/false);
    } else {
      at::Tensor V;
      std::tie(U, S, V) = svd_lowrank(W, r, config_int(config, "psoft_svd_lowrank_niter"),
                                      at::make_generator<at::CPUGeneratorImpl>(
                                          static_cast<uint64_t>(config_int(config, "random_seed"))));
      Vh = V.t();
    }
    at::Tensor top_u = U.slice(1, 0, r), top_vh = Vh.slice(0, 0, r);
    at::Tensor scaled = S.slice(0, 0, r) / scaling;
    if (config_string(config, "ab_svd_init") == "psoft_init") {
      A = top_vh;
      B = at::matmul(top_u, at::diag(scaled));
    } else {
      at::Tensor root = at::sqrt(scaled);
      A = at::matmul(at::diag(root), top_vh);
      B = at::matmul(top_u, at::diag(root));
    }
  }
  psoft_R_->put_module(adapter, rotation);
  A_[adapter] = A.contiguous();
  B_[adapter] = B.contiguous();
  r_[adapter] = r;
  scaling_[adapter] = scaling;
  dropout_[adapter] = config_double(config, "psoft_dropout");
}

at::Tensor PsoftLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const at::Tensor& A = A_.at(adapter);
  at::Tensor input = x.to(A.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor xa = at::matmul(input, A.to(input.device()).t());
  // PEFT's OrthLayer forward: computed in f32 for half inputs on CPU.
  at::ScalarType compute = upcast_on_cpu(xa) ? at::kFloat : xa.scalar_type();
  at::Tensor R = static_cast<PsoftRotation&>(psoft_R_->module(adapter)).matrix();
  at::Tensor xr = at::matmul(xa.to(compute), R.to(compute).t()).to(xa.scalar_type());
  at::Tensor delta = at::matmul(xr - xa, B_.at(adapter).to(input.device(), input.scalar_type()).t());
  return (result + delta * scaling_.at(adapter)).to(result.scalar_type());
}

at::Tensor PsoftLayer::delta_weight(const std::string& adapter) const {
  at::Tensor weight = linear_weight(*base_layer());
  const at::ScalarType compute = upcast_on_cpu(weight) ? at::kFloat : weight.scalar_type();
  auto options = weight.options().dtype(compute);
  at::Tensor R = static_cast<PsoftRotation&>(psoft_R_->module(adapter)).matrix().to(options);
  at::Tensor eye = at::eye(r_.at(adapter), options);
  at::Tensor delta = at::matmul(at::matmul(B_.at(adapter).to(options), R - eye), A_.at(adapter).to(options));
  return (delta * scaling_.at(adapter)).to(weight.scalar_type());
}

void PsoftLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
  A_.erase(adapter);
  B_.erase(adapter);
}

}  // namespace peft4j::tuners
