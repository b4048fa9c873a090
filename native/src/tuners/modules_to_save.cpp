#include "peft4j/tuners/modules_to_save.h"

#include "peft4j/error.h"

namespace peft4j::tuners {

ModuleCopyLayer::ModuleCopyLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                                 const std::string& base_name, const std::string& copies_name)
    : AdapterLayer(std::move(base), std::move(state), base_name) {
  copies_ = adapter_dict(copies_name);
}

void ModuleCopyLayer::add(const std::string& adapter) {
  std::shared_ptr<torch::nn::Module> copy;
  try {
    copy = base_layer()->clone();
  } catch (const std::exception&) {
    fail(ErrorKind::Unsupported, peft_type() + " cannot copy module " + base_layer()->name() +
                                     ": peft4j copies single layers (Linear, Embedding, norms), not composite modules");
  }
  for (auto& p : copy->parameters(true)) p.set_requires_grad(true);
  copies_->put_module(adapter, copy);
}

void ModuleCopyLayer::add(const std::string& adapter, std::shared_ptr<torch::nn::Module> module) {
  copies_->put_module(adapter, std::move(module));
}

std::shared_ptr<torch::nn::Module> ModuleCopyLayer::copy(const std::string& adapter) const {
  auto children = copies_->named_children();
  const auto* child = children.find(adapter);
  if (!child) fail(ErrorKind::NotFound, "no " + peft_type() + " copy for adapter '" + adapter + "'");
  return *child;
}

at::Tensor ModuleCopyLayer::apply(const at::Tensor& x, const at::Tensor&, const std::string& adapter) {
  return models::forward_module(*copy(adapter), x);
}

ModulesToSaveLayer::ModulesToSaveLayer(std::shared_ptr<torch::nn::Module> original, std::shared_ptr<AdapterState> state)
    : ModuleCopyLayer(std::move(original), std::move(state), "original_module", "modules_to_save") {}

at::Tensor ModulesToSaveLayer::adapted_forward(const at::Tensor& x) {
  // PEFT uses the copy of the first active adapter that has one.
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) return apply(x, at::Tensor(), adapter);
  return base_forward(x);
}

}  // namespace peft4j::tuners
