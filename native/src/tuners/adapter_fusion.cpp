// AdapterFusion. Random state: libtorch's default generator (query and key weights).
#include "peft4j/tuners/adapter_fusion.h"

#include <torch/nn/modules/linear.h>

#include "peft4j/error.h"

namespace peft4j::tuners {

std::vector<std::string> composed_adapters(const nlohmann::json& config, const std::string& field_name) {
  std::vector<std::string> out;
  if (!config.contains(field_name) || config[field_name].is_null()) return out;
  const auto& field = config[field_name];
  if (!field.is_array() || field.size() < 2)
    fail(ErrorKind::InvalidArgument, "BOTTLENECK config field '" + field_name +
                                         "' must list at least two adapter names, got " + field.dump());
  for (const auto& name : field) {
    if (!name.is_string())
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field '" + field_name + "' holds " + name.dump());
    out.push_back(name.get<std::string>());
  }
  return out;
}

std::vector<std::string> fused_adapters(const nlohmann::json& config) { return composed_adapters(config, "fusion"); }

FusionModule::FusionModule(DeltaLayer& layer, std::vector<std::string> adapters, int64_t width)
    : layer_(layer), adapters_(std::move(adapters)) {
  at::NoGradGuard no_grad;
  auto query = register_module("query", torch::nn::Linear(width, width));
  auto key = register_module("key", torch::nn::Linear(width, width));
  auto value = register_module("value", torch::nn::Linear(torch::nn::LinearOptions(width, width).bias(false)));
  for (auto* linear : {query.get(), key.get()}) {
    linear->weight.normal_(0.0, 0.02);
    linear->bias.zero_();
  }
  value->weight.copy_(at::eye(width));
}

at::Tensor FusionModule::delta(const at::Tensor& z) {
  std::vector<at::Tensor> outputs;
  for (const auto& name : adapters_) {
    if (!layer_.has_adapter(name))
      fail(ErrorKind::NotFound, "AdapterFusion fuses adapter '" + name + "', which is no longer in the model");
    outputs.push_back(layer_.delta(name).delta(z));
  }
  at::Tensor stacked = at::stack(outputs, -2);  // [.., adapters, d]
  at::Tensor q = models::forward_child(*this, "query", z).unsqueeze(-2);  // [.., 1, d]
  at::Tensor k = models::forward_child(*this, "key", stacked);
  at::Tensor v = models::forward_child(*this, "value", stacked);
  at::Tensor weights = at::softmax(at::matmul(q, k.transpose(-1, -2)), -1);  // [.., 1, adapters]
  last_weights_ = weights.squeeze(-2).detach();
  return at::matmul(weights, v).squeeze(-2);
}

std::shared_ptr<torch::nn::Module> inject_fusion(const std::shared_ptr<torch::nn::Module>& target,
                                                 const InjectContext& context) {
  auto names = fused_adapters(context.config);
  auto layer = std::dynamic_pointer_cast<DeltaLayer>(target);
  for (const auto& name : names)
    if (!layer || !layer->has_adapter(name) || layer->placement(name).insertion != Insertion::Sequential)
      fail(ErrorKind::InvalidArgument, "AdapterFusion '" + context.adapter + "' needs a sequential bottleneck adapter '" +
                                           name + "' at " + context.key + "; add or load the fused adapters first, "
                                           "placed as the fusion is");
  auto module = std::make_shared<FusionModule>(*layer, names, delta_width(*layer));
  return inject_delta(target, context, layer->peft_type(), module, Insertion::Sequential);
}

}  // namespace peft4j::tuners
