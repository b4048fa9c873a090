#include "peft4j/models/model.h"

#include <sstream>

#include "peft4j/error.h"
#include "peft4j/model_dir.h"

namespace peft4j::models {

namespace {
std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> factories;
  return factories;
}

std::string shape_text(at::IntArrayRef shape) {
  std::ostringstream out;
  out << shape;
  return out.str();
}
}  // namespace

void AttentionHooks::set_past_hook(const std::string& adapter, PastHook hook) {
  if (hook) {
    past_hooks_[adapter] = std::move(hook);
  } else {
    past_hooks_.erase(adapter);
  }
}

void AttentionHooks::set_heads_hook(const std::string& adapter, HeadsHook hook) {
  if (hook) {
    heads_hooks_[adapter] = std::move(hook);
  } else {
    heads_hooks_.erase(adapter);
  }
}

LayerKV AttentionHooks::adapt_past(const LayerKV& past, const at::Tensor& input) const {
  if (!past.defined()) return past;
  LayerKV out = past;
  for (const auto& [adapter, hook] : past_hooks_) out = hook(out, input);
  return out;
}

at::Tensor AttentionHooks::add_heads_terms(const at::Tensor& heads, const at::Tensor& input) const {
  at::Tensor out = heads;
  for (const auto& [adapter, hook] : heads_hooks_) {
    at::Tensor term = hook(input);
    if (term.defined()) out = out + term.to(out.scalar_type());
  }
  return out;
}

std::vector<SelfAttentionLayer> self_attention_layers(Model& model) {
  std::vector<SelfAttentionLayer> out;
  for (const auto& item : model.named_modules("", false))
    if (auto* hooks = dynamic_cast<AttentionHooks*>(item.value().get()); hooks && hooks->is_self_attention())
      out.push_back({item.key(), item.value().get(), hooks});
  return out;
}

bool register_model_type(const std::string& model_type, ModelFactory factory) {
  registry()[model_type] = std::move(factory);
  return true;
}

std::vector<std::string> registered_model_types() {
  std::vector<std::string> out;
  for (const auto& [name, factory] : registry()) out.push_back(name);
  return out;
}

std::shared_ptr<Model> create_model(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("model_type") || !config["model_type"].is_string())
    fail(ErrorKind::Format, "model config has no \"model_type\" string");
  std::string type = config["model_type"].get<std::string>();
  auto it = registry().find(type);
  if (it == registry().end()) {
    std::string known;
    for (const auto& name : registered_model_types()) known += (known.empty() ? "" : ", ") + name;
    fail(ErrorKind::Unsupported, "unsupported model_type '" + type + "' (supported: " + known + ")");
  }
  return it->second(config);
}

namespace {

bool any_key_under(const std::map<std::string, at::Tensor>& keys, const std::string& prefix) {
  for (const auto& [name, t] : keys)
    if (name.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

}  // namespace

void load_weights(Model& model, const std::map<std::string, at::Tensor>& checkpoint, const std::string& source) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) targets.emplace(item.key(), item.value());
  // A checkpoint of the bare base model (e.g. GPT2Model's "h.0...." for GPT2LMHeadModel's "transformer.h.0....").
  std::map<std::string, at::Tensor> prefixed;
  const std::string prefix = model.base_model_prefix().empty() ? "" : model.base_model_prefix() + ".";
  const bool add_prefix = !prefix.empty() && !any_key_under(checkpoint, prefix) && any_key_under(targets, prefix);
  if (add_prefix)
    for (const auto& [name, t] : checkpoint) prefixed.emplace(prefix + name, t);
  const std::map<std::string, at::Tensor>& tensors = add_prefix ? prefixed : checkpoint;

  std::vector<std::string> problems;
  for (const auto& [name, tensor] : tensors) {
    auto it = targets.find(name);
    if (it == targets.end()) {
      if (!model.is_optional_key(name)) problems.push_back("unexpected tensor '" + name + "'");
      continue;
    }
    if (it->second.sizes() != tensor.sizes())
      problems.push_back("tensor '" + name + "' has shape " + shape_text(tensor.sizes()) + ", the model expects " +
                         shape_text(it->second.sizes()));
  }
  for (const auto& [name, target] : targets)
    if (!tensors.count(name) && !model.is_optional_key(name)) problems.push_back("missing tensor '" + name + "'");
  if (!problems.empty()) {
    std::string message = "cannot load weights from '" + source + "' into " + model.model_type() + ": ";
    for (size_t i = 0; i < problems.size() && i < 20; ++i) message += (i ? "; " : "") + problems[i];
    if (problems.size() > 20) message += "; and " + std::to_string(problems.size() - 20) + " more";
    fail(ErrorKind::Format, message);
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, tensor] : tensors) {
    auto it = targets.find(name);
    if (it != targets.end()) it->second.copy_(tensor);
  }
  std::vector<std::string> absent;
  for (const auto& [name, target] : targets)
    if (!tensors.count(name)) absent.push_back(name);
  if (!absent.empty()) model.on_absent_optional_keys(absent);
}

std::shared_ptr<Model> load_model(const std::string& dir) {
  io::ModelDir files = io::read_model_dir(dir);
  auto model = create_model(files.config);
  load_weights(*model, files.tensors, dir);
  return model;
}

}  // namespace peft4j::models
