#include "peft4j/tuners/linear_target.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

namespace {

const torch::nn::Module& unwrapped(const torch::nn::Module& module) {
  if (const auto* layer = dynamic_cast<const AdapterLayer*>(&module)) return *layer->base_layer();
  return module;
}

}  // namespace

std::optional<LinearShape> linear_shape(const torch::nn::Module& module, bool conv1d) {
  const torch::nn::Module& m = unwrapped(module);
  if (const auto* linear = dynamic_cast<const torch::nn::LinearImpl*>(&m))
    return LinearShape{linear->weight.size(1), linear->weight.size(0), false};
  if (const auto* conv = dynamic_cast<const models::Conv1DImpl*>(&m); conv && conv1d)
    return LinearShape{conv->weight.size(0), conv->weight.size(1), true};
  return std::nullopt;
}

LinearShape wrapped_linear_shape(const torch::nn::Module& module, const std::string& method, bool conv1d) {
  auto shape = linear_shape(module, conv1d);
  if (!shape)
    fail(ErrorKind::Unsupported, method + (conv1d ? " wraps Linear and Conv1D modules only" : " wraps Linear modules only"));
  return *shape;
}

LinearDeltaLayer::LinearDeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                                   const std::string& method, bool conv1d)
    : WeightDeltaLayer(base, std::move(state)), shape_(wrapped_linear_shape(*base, method, conv1d)) {}

at::Tensor linear_weight(const torch::nn::Module& module) {
  auto params = unwrapped(module).named_parameters(false);
  const auto* w = params.find("weight");
  if (!w) fail(ErrorKind::Internal, "module " + module.name() + " has no weight");
  return *w;
}

at::Tensor linear_bias(const torch::nn::Module& module) {
  auto params = unwrapped(module).named_parameters(false);
  const auto* b = params.find("bias");
  return b ? *b : at::Tensor();
}

std::pair<int64_t, int64_t> largest_target_shape(models::Model& model, const std::vector<std::string>& targets) {
  int64_t out = 0, in = 0;
  for (const auto& key : targets)
    if (auto shape = linear_shape(*module_at(model, key))) {
      out = std::max(out, shape->out_features);
      in = std::max(in, shape->in_features);
    }
  if (out == 0) fail(ErrorKind::InvalidArgument, "no Linear or Conv1D layer among the targets; check target_modules");
  return {out, in};
}

at::TensorOptions target_options(models::Model& model, const std::vector<std::string>& targets) {
  for (const auto& key : targets) {
    auto module = module_at(model, key);
    if (linear_shape(*module)) return linear_weight(*module).options();
  }
  fail(ErrorKind::InvalidArgument, "no Linear or Conv1D layer among the targets; check target_modules");
}

void share_projections(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
                       InjectContext& ctx, const std::string& prefix, at::Tensor a, at::Tensor b) {
  auto options = target_options(model, targets);
  a = a.to(options.device(), options.dtype().toScalarType());
  b = b.to(options.device(), options.dtype().toScalarType());
  const bool persistent = config_bool(ctx.config, "save_projection");
  model_level_dict(tuner_module, prefix + "_A")->put_buffer(ctx.adapter, a, persistent);
  model_level_dict(tuner_module, prefix + "_B")->put_buffer(ctx.adapter, b, persistent);
  ctx.shared[prefix + "_A"] = a;
  ctx.shared[prefix + "_B"] = b;
}

at::Tensor seeded_locations(int64_t rows, int64_t cols, int64_t count, int64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  at::Tensor chosen = at::randperm(rows * cols, generator, at::kLong).slice(0, 0, count);
  return at::stack({at::div(chosen, cols, "floor"), at::remainder(chosen, cols)});
}

bool upcast_on_cpu(const at::Tensor& t) {
  return t.device().is_cpu() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
}

void check_linear_method_config(const nlohmann::json& config, bool has_bias, const std::string& dropout_field) {
  const std::string type = config.value("peft_type", std::string("adapter"));
  if (has_bias) {
    std::string bias = config_string(config, "bias");
    if (bias.size() > 5 && bias.compare(bias.size() - 5, 5, "_only") == 0)
      fail(ErrorKind::Unsupported, type + " config field 'bias' = \"" + bias + "\" is not supported by peft4j (\"none\" or \"all\")");
    if (bias != "none" && bias != "all")
      fail(ErrorKind::InvalidArgument, type + " config field 'bias' must be \"none\" or \"all\", got \"" + bias + "\"");
  }
  if (!dropout_field.empty()) config_probability(config, dropout_field);
}

void check_layers_need_target_list(const nlohmann::json& config) {
  if (!config.contains("target_modules") || !config["target_modules"].is_string()) return;
  for (const char* field : {"layers_to_transform", "layers_pattern"})
    if (config.contains(field) && !config[field].is_null())
      fail(ErrorKind::InvalidArgument, config_string(config, "peft_type") + " config field '" + field +
                                           "' cannot be used when 'target_modules' is a regular expression (a string)");
}

}  // namespace peft4j::tuners
