#include "peft4j/tuners/modules_to_save.h"

#include "peft4j/error.h"

namespace peft4j::tuners {

ModulesToSaveLayer::ModulesToSaveLayer(std::shared_ptr<torch::nn::Module> original, std::shared_ptr<AdapterState> state)
    : AdapterLayer(std::move(original), std::move(state), "original_module") {
  copies_ = register_module("modules_to_save", std::make_shared<AdapterDict>());
}

void ModulesToSaveLayer::add(const std::string& adapter) {
  std::shared_ptr<torch::nn::Module> copy;
  try {
    copy = base_layer()->clone();
  } catch (const std::exception&) {
    // libtorch copies only modules built from its cloneable layers (Linear, Embedding, LayerNorm, ...).
    fail(ErrorKind::Unsupported, "peft4j copies single layers (Linear, Embedding, LayerNorm), not composite modules");
  }
  for (auto& p : copy->parameters(true)) p.set_requires_grad(true);
  copies_->put_module(adapter, copy);
}

std::shared_ptr<torch::nn::Module> ModulesToSaveLayer::copy(const std::string& adapter) const {
  auto children = copies_->named_children();
  const auto* child = children.find(adapter);
  if (!child) fail(ErrorKind::NotFound, "no module copy for adapter '" + adapter + "'");
  return *child;
}

// The module's own output for the rows of `adapter` replaces the original's.
at::Tensor ModulesToSaveLayer::apply(const at::Tensor& x, const at::Tensor&, const std::string& adapter) {
  return models::forward_module(*copy(adapter), x);
}

at::Tensor ModulesToSaveLayer::adapted_forward(const at::Tensor& x) {
  // PEFT uses the copy of the first active adapter that has one.
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) return apply(x, at::Tensor(), adapter);
  return base_forward(x);
}

}  // namespace peft4j::tuners
