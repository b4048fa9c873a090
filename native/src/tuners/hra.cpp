// HRA as PEFT 0.21 implements it (see hra.h). Random state: only the initial vectors (kaiming-uniform, drawn from
// libtorch's generator, not PEFT's); nothing is derived from a seed.
#include "peft4j/tuners/hra.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/orthogonal.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's HRAConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "HRA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"apply_GS", false},
    {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"bias", "none"}, {"modules_to_save", nullptr}};

class HraTuner : public WrappingTuner<HraLayer> {
 public:
  HraTuner() : WrappingTuner({"HRA", kDefaults, kLinear, {{"init_weights", true}}}) {}

  // PEFT's identity start pairs equal reflections, which needs an even r.
  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    if (config_int(config, "r") % 2 != 0) return std::nullopt;
    return WrappingTuner::identity_config(config);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    config_bool(config, "apply_GS");
    config_bool(config, "init_weights");
    orthogonal::check_bias(config, "HRA", "hra_only");
    if (config["target_modules"].is_string() && !config["layers_to_transform"].is_null())
      fail(ErrorKind::InvalidArgument, "HRA config field 'layers_to_transform' cannot be used when 'target_modules' "
                                       "is a regular expression");
    if (config["target_modules"].is_string() && !config["layers_pattern"].is_null())
      fail(ErrorKind::InvalidArgument, "HRA config field 'layers_pattern' cannot be used when 'target_modules' is a "
                                       "regular expression");
  }

  void add(HraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<HraTuner>());

}  // namespace

HraLayer::HraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, "HRA wraps Linear modules only, not " + base->name());
  in_features_ = linear->weight.size(1);
}

bool HraLayer::has_adapter(const std::string& adapter) const { return r_.count(adapter) > 0; }

void HraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise) {
  at::Tensor w = orthogonal::base_weight(*base_layer());
  auto options = at::TensorOptions().dtype(w.scalar_type()).device(w.device());
  at::Tensor u = at::zeros({in_features_, r}, options);
  if (initialise) {
    // kaiming_uniform_(a=sqrt(5)) on an [in, k] tensor draws from U(-1/sqrt(k), 1/sqrt(k)).
    auto kaiming = [&](int64_t k) {
      double bound = 1.0 / std::sqrt(static_cast<double>(k));
      return at::empty({in_features_, k}, options).uniform_(-bound, bound);
    };
    // With init_weights and an even r, each vector appears twice in a row: the reflections cancel, H = I.
    if (config_bool(config, "init_weights") && r % 2 == 0)
      u = kaiming(r / 2).repeat_interleave(2, 1);
    else
      u = kaiming(r);
  }
  hra_u_->put_parameter(adapter, u);
  r_[adapter] = r;
  apply_gs_[adapter] = config_bool(config, "apply_GS");
}

at::Tensor HraLayer::reflection(const std::string& adapter, bool reverse) const {
  const int64_t r = r_.at(adapter);
  at::Tensor u = hra_u_->parameter(adapter);
  at::Tensor eye = at::eye(u.size(0), u.options());
  if (apply_gs_.at(adapter)) {
    std::vector<at::Tensor> basis;
    basis.push_back((u.select(1, 0) / u.select(1, 0).norm()).view({-1, 1}));
    for (int64_t i = 1; i < r; ++i) {
      at::Tensor ui = u.select(1, i).view({-1, 1});
      for (int64_t j = 0; j < i; ++j) ui = ui - at::matmul(basis[j].t(), ui) * basis[j];
      basis.push_back((ui / ui.norm()).view({-1, 1}));
    }
    at::Tensor q = at::cat(basis, 1);
    return eye - 2 * at::matmul(q, q.t());
  }
  u = u / u.norm(2, {0});
  at::Tensor h = eye;
  for (int64_t k = 0; k < r; ++k) {
    at::Tensor ui = u.select(1, reverse ? r - 1 - k : k).view({-1, 1});
    h = h - at::matmul(at::matmul(2 * h, ui), ui.t());
  }
  return h;
}

// F.linear(x, W H_1 H_2 ..., b) over the adapters in order, as PEFT builds the adapted weight.
at::Tensor HraLayer::forward_with(const at::Tensor& x, const std::vector<std::string>& adapters) {
  at::Tensor chain;
  for (const auto& adapter : adapters) {
    if (!has_adapter(adapter)) continue;
    at::Tensor h = reflection(adapter);
    chain = chain.defined() ? at::mm(chain.to(h.scalar_type()), h) : h;
  }
  if (!chain.defined()) return base_forward(x);
  const at::ScalarType dtype = x.scalar_type();
  at::Tensor weight = at::mm(orthogonal::base_weight(*base_layer()).detach().to(chain.scalar_type()), chain);
  at::Tensor bias = orthogonal::base_bias(*base_layer());
  if (bias.defined()) bias = bias.to(chain.scalar_type());
  return at::linear(x.to(chain.scalar_type()), weight, bias).to(dtype);
}

at::Tensor HraLayer::adapted_forward(const at::Tensor& x) { return forward_with(x, state_->active); }

// One adapter alone (a mixed batch's rows): the adapted weight replaces the base computation.
at::Tensor HraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  return forward_with(x, {adapter});
}

void HraLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor h = reflection(adapter);
  w.copy_(at::mm(w.to(h.scalar_type()), h).to(w.scalar_type()));
}

void HraLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor h = reflection(adapter, /*reverse=*/true);
  w.copy_(at::mm(w.to(h.scalar_type()), h).to(w.scalar_type()));
}

void HraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  apply_gs_.erase(adapter);
}

}  // namespace peft4j::tuners
