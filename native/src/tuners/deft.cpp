// DEFT. P is drawn N(0, 0.02) from the global generator, then R: with init_weights R = rightᵀ W / s, so the adapted
// weight starts as W; without, N(0, 0.02 · init_scale). The projection and update are computed in f32 as PEFT does,
// then cast to the input's dtype.
#include "peft4j/tuners/deft.h"

#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's DeftConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "DEFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"decomposition_method", "relu"}, {"init_scale", 1.0}, {"alpha", nullptr},
    {"para", false}, {"fan_in_fan_out", false}, {"deft_dropout", 0.0}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"bias", "none"}, {"modules_to_save", nullptr}};

class DeftTuner : public WrappingTuner<DeftLayer> {
 public:
  // init_weights true (without PaRa, which cannot start as the identity): R = rightᵀ W / s, so ΔW = 0.
  DeftTuner() : WrappingTuner({"DEFT", kDefaults, kLinear | kConv1D, {{"init_weights", true}, {"para", false}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "deft_dropout");
    check_layers_need_target_list(config);
    config_positive_int(config, "r");
    config_choice(config, "decomposition_method", {"relu", "qr"});
    config_double(config, "init_scale");
    config_optional_int(config, "alpha");
    config_bool(config, "para");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
  }

  void add(DeftLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<DeftTuner>());

}  // namespace

DeftLayer::DeftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "DEFT");
  deft_P_ = register_module("deft_P", std::make_shared<AdapterDict>());
  deft_R_ = register_module("deft_R", std::make_shared<AdapterDict>());
}

void DeftLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  // The projection has rank at most out_features (qr returns no more columns), so PEFT caps r there.
  const int64_t r = std::min(config_int(config, "r"), shape_.out_features);
  r_[adapter] = r;
  qr_[adapter] = config_string(config, "decomposition_method") == "qr";
  para_[adapter] = config_bool(config, "para");
  auto alpha = config_optional_int(config, "alpha");
  scaling_[adapter] = alpha && *alpha != 0 ? static_cast<double>(*alpha) / static_cast<double>(r) : 1.0;
  dropout_[adapter] = config_double(config, "deft_dropout");

  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor P = at::empty({shape_.out_features, r}, at::kFloat);
  at::Tensor R;
  {
    at::NoGradGuard no_grad;
    P.normal_(0.0, 0.02);
    if (!para_[adapter]) {
      if (initialise && config_bool(config, "init_weights"))
        R = removed(P, qr_[adapter]) / scaling_[adapter];
      else
        R = at::empty({r, shape_.in_features}, at::kFloat).normal_(0.0, 0.02 * config_double(config, "init_scale"));
    }
  }
  deft_P_->put_parameter(adapter, P.to(weight.device(), weight.scalar_type()));
  if (R.defined()) deft_R_->put_parameter(adapter, R.to(weight.device(), weight.scalar_type()));
}

std::pair<at::Tensor, at::Tensor> DeftLayer::project(const at::Tensor& P_in, bool qr) {
  at::Tensor P = P_in.to(at::kFloat);
  if (qr) {
    at::Tensor Q = std::get<0>(at::linalg_qr(P));
    return {Q, Q};
  }
  return {P, at::relu(P)};
}

std::pair<at::Tensor, at::Tensor> DeftLayer::project(const std::string& adapter) const {
  return project(deft_P_->parameter(adapter), qr_.at(adapter));
}

at::Tensor DeftLayer::removed(const at::Tensor& P, bool qr) const {
  at::Tensor W = linear_weight(*base_layer()).to(at::kFloat);
  if (shape_.fan_in_fan_out) W = W.t();
  return at::matmul(project(P, qr).second.t(), W);
}

at::Tensor DeftLayer::merge_factor(const std::string& adapter) const {
  return removed(deft_P_->parameter(adapter), qr_.at(adapter));
}

at::Tensor DeftLayer::delta_from_factor(const std::string& adapter, const at::Tensor& factor) const {
  at::Tensor Q = project(adapter).first;
  at::Tensor delta = para_.at(adapter)
                         ? -at::matmul(Q, factor)
                         : at::matmul(Q, deft_R_->parameter(adapter).to(at::kFloat) * scaling_.at(adapter) - factor);
  if (shape_.fan_in_fan_out) delta = delta.t();
  return delta.to(linear_weight(*base_layer()).scalar_type());
}

at::Tensor DeftLayer::delta_weight(const std::string& adapter) const {
  return delta_from_factor(adapter, merge_factor(adapter));
}

void DeftLayer::merge(const std::vector<std::string>& adapters) {
  std::vector<std::pair<std::string, at::Tensor>> factors;
  at::NoGradGuard no_grad;
  for (const auto& adapter : adapters)
    if (has_adapter(adapter) && !std::count(merged_.begin(), merged_.end(), adapter))
      factors.emplace_back(adapter, merge_factor(adapter));
  at::Tensor w = base_weight();
  for (const auto& [adapter, factor] : factors) {
    w.add_(delta_from_factor(adapter, factor));
    merged_factor_[adapter] = factor;
    merged_.push_back(adapter);
  }
}

void DeftLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  auto it = merged_factor_.find(adapter);
  at::Tensor delta = it != merged_factor_.end() ? delta_from_factor(adapter, it->second) : delta_weight(adapter);
  if (it != merged_factor_.end()) merged_factor_.erase(it);
  base_weight().sub_(delta);
}

at::Tensor DeftLayer::updated(const at::Tensor& x, const at::Tensor& base_product, at::Tensor result,
                              const std::string& adapter) {
  auto [Q, right] = project(adapter);
  result = result - at::matmul(at::matmul(base_product, right), Q.t());
  if (para_.at(adapter)) return result;
  at::Tensor R = deft_R_->parameter(adapter).to(at::kFloat) * scaling_.at(adapter);
  at::Tensor input = x;
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  return result + at::matmul(at::linear(input, R), Q.t());
}

// Every adapter's removal term reads the base product W x, not the running result, as PEFT's forward does.
at::Tensor DeftLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor base_out = base_forward(x);
  bool any = false;
  for (const auto& adapter : state_->active) any = any || has_adapter(adapter);
  if (!any) return base_out;
  at::Tensor result = base_out.to(at::kFloat);
  at::Tensor bias = linear_bias(*base_layer());
  at::Tensor base_product = bias.defined() ? result - bias.to(at::kFloat) : result;
  at::Tensor input = x.to(at::kFloat);
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) result = updated(input, base_product, result, adapter);
  return result.to(x.scalar_type());
}

at::Tensor DeftLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor out = result.to(at::kFloat);
  at::Tensor bias = linear_bias(*base_layer());
  at::Tensor base_product = bias.defined() ? out - bias.to(at::kFloat) : out;
  return updated(x.to(at::kFloat), base_product, out, adapter).to(result.scalar_type());
}

void DeftLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  qr_.erase(adapter);
  para_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
  merged_factor_.erase(adapter);
}

}  // namespace peft4j::tuners
