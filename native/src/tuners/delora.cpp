// DeLoRA. Random state: A (and B with init_weights false) are drawn kaiming-uniform (a = √5) from the global
// generator in PEFT's order; λ starts at delora_lambda (rank_pattern / lambda_pattern per module). The base weight's
// column norms are a frozen buffer saved with the adapter, so a loaded adapter keeps the norms it was trained with.
#include "peft4j/tuners/delora.h"

#include <torch/nn/init.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's DeloraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "DELORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"delora_lambda", 15}, {"module_dropout", 0.0},
    {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"bias", "none"}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"rank_pattern", nlohmann::json::object()},
    {"lambda_pattern", nlohmann::json::object()}, {"modules_to_save", nullptr}};

class DeloraTuner : public WrappingTuner<DeloraLayer> {
 public:
  // init_weights true: B = 0, so ΔW = 0.
  DeloraTuner() : WrappingTuner({"DELORA", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "module_dropout");
    config_positive_int(config, "r");
    config_double(config, "delora_lambda");
    config_bool(config, "init_weights");
    check_pattern(config, "rank_pattern", /*positive_ints=*/true);
    check_pattern(config, "lambda_pattern", /*positive_ints=*/false);
  }

  void add(DeloraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, pattern_int(ctx.config, "rank_pattern", ctx.key, "r"),
              pattern_double(ctx.config, "lambda_pattern", ctx.key, "delora_lambda"), ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<DeloraTuner>());

}  // namespace

DeloraLayer::DeloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "DeLoRA", /*conv1d=*/false);
  delora_A_ = register_module("delora_A", std::make_shared<AdapterDict>());
  delora_B_ = register_module("delora_B", std::make_shared<AdapterDict>());
  delora_lambda_ = register_module("delora_lambda", std::make_shared<AdapterDict>());
  delora_w_norm_ = register_module("delora_w_norm", std::make_shared<AdapterDict>());
}

void DeloraLayer::add(const std::string& adapter, int64_t r, double delora_lambda, const nlohmann::json& config,
                      bool initialise) {
  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor a = at::zeros({r, shape_.in_features}, at::kFloat);
  at::Tensor b = at::zeros({shape_.out_features, r}, at::kFloat);
  at::Tensor lambda = at::full({1}, delora_lambda, at::kFloat);
  at::Tensor w_norm;
  {
    at::NoGradGuard no_grad;
    if (initialise) {
      torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
      if (!config_bool(config, "init_weights")) torch::nn::init::kaiming_uniform_(b, std::sqrt(5.0));
    }
    w_norm = weight.detach().norm(2, 0);
  }
  auto options = weight.options().requires_grad(false);
  delora_A_->put_parameter(adapter, a.to(options));
  delora_B_->put_parameter(adapter, b.to(options));
  delora_lambda_->put_parameter(adapter, lambda.to(options));
  delora_w_norm_->put_buffer(adapter, w_norm.clone());
  r_[adapter] = r;
  dropout_[adapter] = config_double(config, "module_dropout");
}

at::Tensor DeloraLayer::term_scaling(const std::string& adapter) const {
  at::Tensor a_norm = delora_A_->parameter(adapter).norm(2, 1).clamp_min(1e-4);
  at::Tensor b_norm = delora_B_->parameter(adapter).norm(2, 0).clamp_min(1e-4);
  return delora_lambda_->parameter(adapter) / static_cast<double>(r_.at(adapter)) / (a_norm * b_norm);
}

at::Tensor DeloraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor a = delora_A_->parameter(adapter);
  at::Tensor input = x.to(a.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor h = at::linear(input * delora_w_norm_->parameter(adapter), a) * term_scaling(adapter);
  return result + at::linear(h, delora_B_->parameter(adapter)).to(result.scalar_type());
}

at::Tensor DeloraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor b = delora_B_->parameter(adapter) * term_scaling(adapter);
  return at::matmul(b, delora_A_->parameter(adapter)) * delora_w_norm_->parameter(adapter).unsqueeze(0);
}

void DeloraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
