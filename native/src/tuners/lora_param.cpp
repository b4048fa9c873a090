// target_parameters as PEFT 0.21's lora.ParamWrapper and BaseTuner._inject_parameters.
#include "peft4j/tuners/lora_param.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

LoraParamLayer::LoraParamLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                               std::string parameter_name)
    : WeightDeltaLayer(std::move(base), std::move(state)), parameter_name_(std::move(parameter_name)) {
  at::Tensor p = parameter();
  if (p.dim() != 2)
    fail(ErrorKind::Unsupported, "lora.ParamWrapper was initialized with a " + std::to_string(p.dim()) +
                                     "-dimensional parameter '" + parameter_name_ + "', but only 2d parameters are "
                                     "supported by peft4j (PEFT also takes 3d expert stacks, which peft4j's models lack)");
  in_features_ = p.size(1);
  out_features_ = p.size(0);
  lora_A_ = register_module("lora_A", std::make_shared<AdapterDict>());
  lora_B_ = register_module("lora_B", std::make_shared<AdapterDict>());
}

at::Tensor LoraParamLayer::parameter() const {
  auto params = base_layer()->named_parameters(false);
  const auto* p = params.find(parameter_name_);
  if (!p) fail(ErrorKind::Internal, "lora.ParamWrapper: the wrapped module has no parameter '" + parameter_name_ + "'");
  return *p;
}

void LoraParamLayer::add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                         bool initialise) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "LoRA rank must be positive, got " + std::to_string(r));
  at::Tensor p = parameter();
  at::NoGradGuard no_grad;
  auto a = torch::nn::Linear(torch::nn::LinearOptions(in_features_, r).bias(false));
  auto b = torch::nn::Linear(torch::nn::LinearOptions(r, out_features_).bias(false));
  a->to(p.device(), p.scalar_type());
  b->to(p.device(), p.scalar_type());
  const auto& init = config["init_lora_weights"];
  if (initialise && init.is_boolean() && init.get<bool>()) {
    // kaiming_uniform_(a = sqrt(5)) as nn.Linear's own init, B = 0 (PEFT's reset_lora_parameters).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
    a->weight.uniform_(-bound, bound);
    b->weight.zero_();
  } else if (initialise && init.is_string()) {
    a->weight.normal_(0.0, 1.0 / static_cast<double>(r));
    b->weight.zero_();
  }
  lora_A_->put_module(adapter, a.ptr());
  lora_B_->put_module(adapter, b.ptr());
  r_[adapter] = r;
  scaling_[adapter] = config_bool(config, "use_rslora") ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

at::Tensor LoraParamLayer::delta_weight(const std::string& adapter) const {
  at::Tensor a = lora_A_->module(adapter).named_parameters(false)["weight"];
  at::Tensor b = lora_B_->module(adapter).named_parameters(false)["weight"];
  const auto dtype = parameter().scalar_type();
  if (upcast_on_cpu(b)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
  }
  return (at::matmul(b, a) * scaling_.at(adapter)).to(dtype);
}

at::Tensor LoraParamLayer::forward_with(const at::Tensor& x, const at::Tensor& value) const {
  torch::nn::Module& base = *base_layer();
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&base)) return at::linear(x, value, linear->bias);
  if (auto* conv = dynamic_cast<models::Conv1DImpl*>(&base)) {
    auto sizes = x.sizes().vec();
    sizes.back() = value.size(1);
    return at::addmm(conv->bias, x.reshape({-1, x.size(-1)}), value).view(sizes);
  }
  if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(&base)) {
    const auto& o = emb->options;
    return at::embedding(value, x, o.padding_idx() ? *o.padding_idx() : -1, o.scale_grad_by_freq(), o.sparse());
  }
  fail(ErrorKind::Unsupported, "lora.ParamWrapper wraps the parameters of Linear, GPT-2 Conv1D and Embedding modules");
}

at::Tensor LoraParamLayer::apply(const at::Tensor& x, const at::Tensor&, const std::string& adapter) {
  return forward_with(x, parameter() + delta_weight(adapter));
}

at::Tensor LoraParamLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor delta;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) delta = delta.defined() ? delta + delta_weight(adapter) : delta_weight(adapter);
  if (!delta.defined()) return base_forward(x);
  return forward_with(x, parameter() + delta);
}

void LoraParamLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  scaling_.erase(adapter);
}

std::vector<std::string> inject_lora_parameters(models::Model& model, const InjectContext& ctx,
                                                const std::vector<std::string>& module_targets) {
  const nlohmann::json& names = ctx.config["target_parameters"];
  std::set<std::string> wanted;  // sorted, as PEFT matches them
  for (const auto& n : names) wanted.insert(n.get<std::string>());
  auto matches = [&](const std::string& key) {
    for (const auto& w : wanted)
      if (key == w || (key.size() > w.size() && key.compare(key.size() - w.size(), w.size(), w) == 0 &&
                       key[key.size() - w.size() - 1] == '.'))
        return true;
    return false;
  };
  // (module path, parameter name) in module order; a module already wrapped is matched by its own name.
  std::vector<std::pair<std::string, std::string>> found;
  for (const auto& item : model.named_modules("", false)) {
    const std::string& path = item.key();
    if (path.size() >= 11 && path.compare(path.size() - 11, 11, ".base_layer") == 0) continue;
    torch::nn::Module* module = item.value().get();
    std::string owner = path;
    if (auto* layer = dynamic_cast<LoraParamLayer*>(module)) {
      if (matches(path + "." + layer->parameter_name())) found.emplace_back(path, layer->parameter_name());
      continue;
    }
    if (auto* layer = dynamic_cast<AdapterLayer*>(module)) {
      for (const auto& p : layer->base_layer()->named_parameters(false))
        if (matches(path + "." + p.key()))
          fail(ErrorKind::InvalidArgument, "LORA config field 'target_parameters': parameter '" + path + "." + p.key() +
                                               "' belongs to a layer another adapter wraps as a module; make sure that "
                                               "this layer is not also targeted with target_modules");
      continue;
    }
    for (const auto& p : module->named_parameters(false))
      if (matches(path + "." + p.key())) found.emplace_back(path, p.key());
  }
  std::vector<std::string> wrapped;
  for (const auto& [path, param] : found) {
    if (path.empty())
      fail(ErrorKind::InvalidArgument, "Targeting an nn.Parameter on the top-level module is not supported (parameter '" +
                                           param + "')");
    if (std::count(module_targets.begin(), module_targets.end(), path))
      fail(ErrorKind::InvalidArgument, "LORA config field 'target_parameters': parameter '" + path + "." + param +
                                           "' belongs to a module that target_modules also targets; make sure that "
                                           "this layer is not also targeted with target_modules");
    if (std::count(wrapped.begin(), wrapped.end(), path))
      fail(ErrorKind::Unsupported, "LORA config field 'target_parameters' names two parameters of module '" + path +
                                       "'; peft4j wraps one parameter per module");
    auto target = module_at(model, path);
    auto layer = std::dynamic_pointer_cast<LoraParamLayer>(target);
    if (!layer) {
      layer = std::make_shared<LoraParamLayer>(target, ctx.state, param);
      auto [parent, child] = parent_of(model, path);
      parent->replace_module(child, layer);
    }
    const std::string key = path + "." + param;
    layer->add(ctx.adapter, pattern_int(ctx.config, "rank_pattern", key, "r"),
               pattern_double(ctx.config, "alpha_pattern", key, "lora_alpha"), ctx.config, ctx.initialise);
    wrapped.push_back(path);
  }
  return wrapped;
}

}  // namespace peft4j::tuners
