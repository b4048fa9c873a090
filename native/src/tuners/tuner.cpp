#include "peft4j/tuners/tuner.h"

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <map>
#include <set>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/model_level_dicts.h"

namespace peft4j::tuners {

namespace {
std::map<std::string, std::shared_ptr<const Tuner>>& registry() {
  static std::map<std::string, std::shared_ptr<const Tuner>> tuners;
  return tuners;
}
}  // namespace

// ---- AdapterDict -------------------------------------------------------------------------------------------

void AdapterDict::put_module(const std::string& adapter, std::shared_ptr<torch::nn::Module> module) {
  frozen_.erase(adapter);
  if (named_children().contains(adapter))
    replace_module(adapter, std::move(module));
  else
    register_module(adapter, std::move(module));
}

void AdapterDict::put_parameter(const std::string& adapter, const at::Tensor& value) {
  if (parameters_.contains(adapter)) parameters_.erase(adapter);
  register_parameter(adapter, value);
  frozen_.erase(adapter);
  transient_.erase(adapter);
}

// libtorch cannot unregister a buffer, so frozen state is a parameter that never requires grad.
void AdapterDict::put_buffer(const std::string& adapter, const at::Tensor& value, bool persistent) {
  if (parameters_.contains(adapter)) parameters_.erase(adapter);
  register_parameter(adapter, value, /*requires_grad=*/false);
  frozen_.insert(adapter);
  if (persistent)
    transient_.erase(adapter);
  else
    transient_.insert(adapter);
}

bool AdapterDict::contains(const std::string& adapter) const {
  return named_children().contains(adapter) || parameters_.contains(adapter);
}

void AdapterDict::remove(const std::string& adapter) {
  if (named_children().contains(adapter)) unregister_module(adapter);
  if (parameters_.contains(adapter)) parameters_.erase(adapter);
  frozen_.erase(adapter);
  transient_.erase(adapter);
}

torch::nn::Module& AdapterDict::module(const std::string& adapter) const {
  auto children = named_children();
  const auto* child = children.find(adapter);
  if (!child) fail(ErrorKind::NotFound, "no adapter '" + adapter + "' in " + name());
  return **child;
}

at::Tensor AdapterDict::parameter(const std::string& adapter) const {
  const auto* p = parameters_.find(adapter);
  if (!p) fail(ErrorKind::NotFound, "no adapter '" + adapter + "' in " + name());
  return *p;
}

std::vector<at::Tensor> AdapterDict::adapter_parameters(const std::string& adapter) const {
  if (parameters_.contains(adapter)) return {parameter(adapter)};
  if (named_children().contains(adapter)) return module(adapter).parameters(true);
  return {};
}

// ---- AdapterLayer ------------------------------------------------------------------------------------------

AdapterLayer::AdapterLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                           std::string base_name)
    : state_(std::move(state)), base_name_(std::move(base_name)) {
  register_module(base_name_, std::move(base));
}

std::shared_ptr<AdapterDict> AdapterLayer::adapter_dict(const std::string& name) {
  return register_module(name, std::make_shared<AdapterDict>());
}

std::shared_ptr<torch::nn::Module> AdapterLayer::base_layer() const { return named_children()[base_name_]; }

bool AdapterLayer::empty() const {
  for (const auto& child : named_children())
    if (auto* dict = dynamic_cast<AdapterDict*>(child.value().get()))
      if (!dict->named_children().is_empty() || !dict->named_parameters(false).is_empty()) return false;
  return true;
}

at::Tensor AdapterLayer::base_forward(const at::Tensor& x) const { return models::forward_module(*base_layer(), x); }

at::Tensor AdapterLayer::forward(const at::Tensor& x) {
  if (state_->disabled) {
    if (!merged_.empty()) unmerge();
    return base_forward(x);
  }
  if (state_->row_adapters) {
    if (!routes_mixed_batches()) fail(ErrorKind::Unsupported, mixed_batch_refusal());
    if (!merged_.empty())
      fail(ErrorKind::InvalidArgument, "a mixed batch cannot run while adapters are merged into the weights; unmerge first");
    return mixed_forward(x, *state_->row_adapters);
  }
  if (!merged_.empty()) return base_forward(x);
  return adapted_forward(x);
}

at::Tensor AdapterLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor result = base_forward(x);
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) result = apply(x, result, adapter);
  return result;
}

at::Tensor AdapterLayer::mixed_forward(const at::Tensor& x, const std::vector<std::string>& row_adapters) {
  if (static_cast<int64_t>(row_adapters.size()) != x.size(0))
    fail(ErrorKind::InvalidArgument, "mixed batch names " + std::to_string(row_adapters.size()) +
                                         " adapters for a batch of " + std::to_string(x.size(0)) + " rows");
  at::Tensor result = base_forward(x);
  std::vector<std::string> unique;
  for (const auto& name : row_adapters)
    if (std::find(unique.begin(), unique.end(), name) == unique.end()) unique.push_back(name);
  for (const auto& adapter : unique) {
    if (adapter == "__base__" || !has_adapter(adapter)) continue;
    std::vector<int64_t> rows;
    for (size_t i = 0; i < row_adapters.size(); ++i)
      if (row_adapters[i] == adapter) rows.push_back(static_cast<int64_t>(i));
    at::Tensor index = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(x.device());
    at::Tensor adapted = apply(x.index_select(0, index), result.index_select(0, index), adapter);
    result = result.index_copy(0, index, adapted.to(result.scalar_type()));
  }
  return result;
}

void AdapterLayer::merge(const std::vector<std::string>& adapters) {
  if (!can_merge()) fail(ErrorKind::Unsupported, merge_refusal());
  for (const auto& adapter : adapters) {
    if (!has_adapter(adapter) || std::count(merged_.begin(), merged_.end(), adapter)) continue;
    merge_adapter(adapter);
    merged_.push_back(adapter);
  }
}

void AdapterLayer::unmerge() {
  while (!merged_.empty()) {
    unmerge_adapter(merged_.back());
    merged_.pop_back();
  }
}

void AdapterLayer::merge_adapter(const std::string&) {
  fail(ErrorKind::Unsupported, peft_type() + " adapters cannot be merged into the base weights");
}

void AdapterLayer::unmerge_adapter(const std::string&) {
  fail(ErrorKind::Unsupported, peft_type() + " adapters cannot be unmerged");
}

void AdapterLayer::delete_adapter(const std::string& adapter) {
  if (std::count(merged_.begin(), merged_.end(), adapter))
    fail(ErrorKind::InvalidArgument, "adapter '" + adapter + "' is merged; unmerge before deleting it");
  for (const auto& child : named_children())
    if (auto* dict = dynamic_cast<AdapterDict*>(child.value().get())) dict->remove(adapter);
  forget_adapter(adapter);
}

// ---- WeightDeltaLayer ---------------------------------------------------------------------------------------

at::Tensor WeightDeltaLayer::base_weight() const {
  auto params = base_layer()->named_parameters(false);
  const auto* w = params.find("weight");
  if (!w) fail(ErrorKind::Internal, peft_type() + " wraps a module without a weight");
  return *w;
}

void WeightDeltaLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  w.add_(delta_weight(adapter).to(w.scalar_type()));
}

void WeightDeltaLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  w.sub_(delta_weight(adapter).to(w.scalar_type()));
}

// ---- Module kinds ------------------------------------------------------------------------------------------

bool is_module_kind(const torch::nn::Module& m, unsigned kinds) {
  return ((kinds & kLinear) && dynamic_cast<const torch::nn::LinearImpl*>(&m)) ||
         ((kinds & kConv1D) && dynamic_cast<const models::Conv1DImpl*>(&m)) ||
         ((kinds & kEmbedding) && dynamic_cast<const torch::nn::EmbeddingImpl*>(&m));
}

std::string describe_module_kinds(unsigned kinds) {
  std::vector<std::string> names;
  if (kinds & kLinear) names.push_back("Linear");
  if (kinds & kConv1D) names.push_back("GPT-2's Conv1D");
  if (kinds & kEmbedding) names.push_back("Embedding");
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return out + " modules";
}

std::shared_ptr<AdapterDict> model_level_dict(torch::nn::Module& tuner_module, const std::string& name) {
  auto children = tuner_module.named_children();
  if (const auto* child = children.find(name)) return std::dynamic_pointer_cast<AdapterDict>(*child);
  return tuner_module.register_module(name, std::make_shared<AdapterDict>());
}

std::shared_ptr<AdapterDict> model_level_dict(torch::nn::Module& tuner_module, const std::string& group,
                                              const std::string& name) {
  auto children = tuner_module.named_children();
  std::shared_ptr<torch::nn::Module> container;
  if (const auto* child = children.find(group))
    container = *child;
  else
    container = tuner_module.register_module(group, std::make_shared<torch::nn::Module>());
  return model_level_dict(*container, name);
}

std::vector<std::pair<std::string, std::shared_ptr<AdapterDict>>> model_level_dicts(torch::nn::Module& tuner_module) {
  std::vector<std::pair<std::string, std::shared_ptr<AdapterDict>>> out;
  for (const auto& child : tuner_module.named_children()) {
    if (auto dict = std::dynamic_pointer_cast<AdapterDict>(child.value())) {
      out.emplace_back(child.key(), dict);
    } else if (!std::dynamic_pointer_cast<models::Model>(child.value())) {
      for (const auto& inner : child.value()->named_children())
        if (auto dict = std::dynamic_pointer_cast<AdapterDict>(inner.value()))
          out.emplace_back(child.key() + "." + inner.key(), dict);
    }
  }
  return out;
}

// ---- Tuner and registry ------------------------------------------------------------------------------------

std::string Tuner::checkpoint_key(const std::string& model_key, const std::string& adapter) const {
  return remove_adapter_name(model_key, adapter);
}

bool register_tuner(std::shared_ptr<const Tuner> tuner) {
  const std::string type = tuner->peft_type();
  if (!registry().emplace(type, std::move(tuner)).second)
    fail(ErrorKind::Internal, "peft_type '" + type + "' is registered twice");
  return true;
}

void Tuner::add_weighted_adapter(PeftModel&, const WeightedCombination& request) const {
  fail(ErrorKind::Unsupported, "add_weighted_adapter does not combine " + peft_type() + " adapters ('" +
                                   request.adapters.front() + "')");
}

nlohmann::json Tuner::prepare_from_data(const nlohmann::json&, models::Model&, const std::vector<models::ModelInputs>&,
                                        std::map<std::string, at::Tensor>&) const {
  fail(ErrorKind::Unsupported, peft_type() + " adapters are made from no data (only LORA's init_lora_weights \"corda\", "
                                             "\"eva\" and \"lora_ga\" and PAFI's mask_type \"fisher\" are)");
}

const Tuner& tuner_for(const std::string& peft_type) {
  auto it = registry().find(peft_type);
  if (it == registry().end()) {
    std::string known;
    for (const auto& name : registered_tuners()) known += (known.empty() ? "" : ", ") + name;
    fail(ErrorKind::Unsupported, "unknown or unsupported peft_type '" + peft_type + "' (supported: " + known + ")");
  }
  return *it->second;
}

std::vector<std::string> registered_tuners() {
  std::vector<std::string> out;
  for (const auto& [name, tuner] : registry()) out.push_back(name);
  return out;
}

std::string remove_adapter_name(const std::string& key, const std::string& adapter) {
  if (key.find('.') == std::string::npos) return key;
  const std::string tail = "." + adapter;
  // A tensor stored directly under the adapter name: "....lora_embedding_A.default".
  if (key.size() > tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0)
    return key.substr(0, key.size() - tail.size());
  // A module per adapter: "....lora_A.default.weight" -> "....lora_A.weight".
  auto dot = key.rfind('.');
  std::string head = key.substr(0, dot);
  if (head.size() > tail.size() && head.compare(head.size() - tail.size(), tail.size(), tail) == 0)
    head.resize(head.size() - tail.size());
  return head + key.substr(dot);
}

}  // namespace peft4j::tuners
