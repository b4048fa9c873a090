#include "peft4j/tuners/peft_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/model_level.h"
#include "peft4j/tuners/modules_to_save.h"

namespace peft4j::tuners {

namespace {

// PEFT's PeftModelForSequenceClassification: the classification head ("classifier" or "score") trains and is saved
// with every adapter of a SEQ_CLS model, added to modules_to_save (names the model lacks are skipped, as PEFT does).
void add_classification_head(nlohmann::json& config) {
  if (!config.contains("modules_to_save") || config.value("task_type", nlohmann::json()) != "SEQ_CLS") return;
  nlohmann::json& names = config["modules_to_save"];
  if (names.is_null()) names = nlohmann::json::array();
  if (!names.is_array()) return;  // the tuner's own check names the field
  for (const char* head : {"classifier", "score"})
    if (std::find(names.begin(), names.end(), head) == names.end()) names.push_back(head);
}

const char* kConfigFile = "adapter_config.json";
const char* kWeightsFile = "adapter_model.safetensors";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

bool under_any(const std::string& key, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes)
    if (starts_with(key, p + ".")) return true;
  return false;
}

void make_directories(const std::string& dir) {
  if (io::is_directory(dir)) return;
  if (io::is_regular_file(dir)) fail(ErrorKind::InvalidArgument, "cannot save the adapter into '" + dir + "': it is a file");
  auto slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0755) != 0 && !io::is_directory(dir))
    fail(ErrorKind::Io, "cannot create directory '" + dir + "'");
}

const char* kPromptEncoders = "prompt_encoder";

// PEFT's prompt_encoder ModuleDict (a child of the PeftModel, beside base_model), or nullptr before the first
// prompt-learning adapter.
AdapterDict* prompt_encoders(const torch::nn::Module& peft) {
  auto children = peft.named_children();
  const auto* dict = children.find(kPromptEncoders);
  return dict ? dynamic_cast<AdapterDict*>(dict->get()) : nullptr;
}

torch::nn::Module* prompt_encoder(const torch::nn::Module& peft, const std::string& adapter) {
  AdapterDict* dict = prompt_encoders(peft);
  return dict && dict->contains(adapter) ? &dict->module(adapter) : nullptr;
}

// Whether the base model sits at "base_model" itself (prompt learning's layout) rather than at "base_model.model".
bool base_at_root(const torch::nn::Module& peft, const models::Model& base) {
  return peft.named_children()["base_model"].get() == &base;
}

// Puts PEFT's layout in place: the base model at "base_model" itself (prompt learning) or inside the tuner module
// there, as "base_model.model" (every other method).
void use_layout(torch::nn::Module& peft, const std::shared_ptr<models::Model>& base,
                const std::shared_ptr<torch::nn::Module>& tuner, bool at_root) {
  if (base_at_root(peft, *base) == at_root) return;
  peft.unregister_module("base_model");
  if (at_root) {
    peft.register_module("base_model", base);
  } else {
    peft.register_module("base_model", tuner);
  }
}

// One tensor of an adapter: where it lives in the model and how PEFT's file names it.
struct AdapterTensor {
  std::string model_key;       // PEFT's named_parameters() name
  std::string checkpoint_key;  // PEFT's adapter_model.safetensors name
  at::Tensor tensor;
  bool trainable;              // saved embedding base weights are not trained
  bool required;               // must be present when loading
};

}  // namespace

nlohmann::json read_adapter_config(const std::string& dir) {
  if (!io::is_directory(dir)) fail(ErrorKind::NotFound, "adapter directory '" + dir + "' does not exist");
  std::string path = io::join_path(dir, kConfigFile);
  if (!io::is_regular_file(path)) fail(ErrorKind::NotFound, "adapter directory '" + dir + "' has no " + kConfigFile);
  nlohmann::json config = io::read_json_file(path);
  if (!config.is_object()) fail(ErrorKind::Format, "'" + path + "' is not a JSON object");
  if (!config.contains("peft_type") || !config["peft_type"].is_string())
    fail(ErrorKind::Format, "'" + path + "' has no \"peft_type\" string");
  return config;
}

PeftModel::PeftModel(std::shared_ptr<models::Model> base) : base_(std::move(base)), state_(std::make_shared<AdapterState>()) {
  tuner_ = std::make_shared<torch::nn::Module>();
  tuner_->register_module("model", base_);
  register_module("base_model", tuner_);
  for (auto& p : base_->parameters(true)) p.set_requires_grad(false);
}

void PeftModel::check_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos || name == "__base__")
    fail(ErrorKind::InvalidArgument, "invalid adapter name '" + name + "' (non-empty, no '.', not \"__base__\")");
}

const PeftModel::Adapter& PeftModel::adapter(const std::string& name) const {
  auto it = adapters_.find(name);
  if (it == adapters_.end()) {
    std::string known;
    for (const auto& n : order_) known += (known.empty() ? "" : ", ") + n;
    fail(ErrorKind::NotFound, "no adapter named '" + name + "' (adapters: " + (known.empty() ? "none" : known) + ")");
  }
  return it->second;
}

NamedLayers PeftModel::adapter_layers() const {
  NamedLayers out;
  for (const auto& item : base_->named_modules("", false))
    if (auto* layer = dynamic_cast<AdapterLayer*>(item.value().get())) out.emplace_back(item.key(), layer);
  return out;
}

void PeftModel::add_adapter(const std::string& name, const nlohmann::json& input) {
  check_name(name);
  if (adapters_.count(name)) fail(ErrorKind::InvalidArgument, "adapter '" + name + "' already exists");
  if (!input.is_object() || !input.contains("peft_type") || !input["peft_type"].is_string())
    fail(ErrorKind::InvalidArgument, "adapter config has no \"peft_type\" string");
  const Tuner& tuner = tuner_for(input["peft_type"].get<std::string>());
  nlohmann::json config = tuner.resolve_for_model(tuner.normalize_config(input), *base_);
  add_classification_head(config);
  tuner.check_model(config, *base_);
  if (!adapters_.empty() && adapters_.begin()->second.tuner != &tuner)
    fail(ErrorKind::Unsupported, "this model carries " + adapters_.begin()->second.tuner->peft_type() +
                                     " adapters; adding a " + tuner.peft_type() + " adapter to it is not supported");

  // Modules inside existing adapter layers (their lora_A, base_layer, ...) are never targets themselves.
  std::vector<std::string> layer_paths;
  for (const auto& [path, layer] : adapter_layers()) layer_paths.push_back(path);
  std::vector<std::string> targets;
  const ModelLevelTuner* level = as_model_level(tuner);
  if (!level)
    for (const auto& key : find_target_modules(*base_, config, [&](const torch::nn::Module& m) { return tuner.can_wrap(m); }))
      if (!under_any(key, layer_paths)) targets.push_back(key);
  if (!level && targets.empty())
    fail(ErrorKind::InvalidArgument, "target modules " + config["target_modules"].dump() + " not found in the base model (" +
                                         base_->model_type() + "); check target_modules");

  Adapter entry{config, &tuner, {}};
  adapters_[name] = entry;
  order_.push_back(name);
  try {
    InjectContext ctx{name, config, "", state_, true, {}};
    if (level) {
      // The first adapter decides PEFT's layout: prompt learning puts the base model at "base_model" itself.
      if (adapters_.size() == 1) use_layout(*this, base_, tuner_, level->base_at_root());
      if (auto encoder = level->attach(*base_, name, config, state_, true)) {
        if (!prompt_encoders(*this)) register_module(kPromptEncoders, std::make_shared<AdapterDict>());
        prompt_encoders(*this)->put_module(name, encoder);
      }
    } else {
      tuner.prepare(*tuner_, *base_, targets, ctx);
    }
    for (const auto& key : targets) {
      auto [parent, child] = parent_of(*base_, key);
      auto target = module_at(*base_, key);
      ctx.key = key;
      auto replacement = tuner.inject(target, ctx);
      if (replacement != target) parent->replace_module(child, replacement);
      adapters_[name].layers.push_back(key);
    }
    if (auto names = config_strings(config, "modules_to_save")) {
      std::vector<std::string> keys;
      for (const auto& item : base_->named_modules("", false))
        for (const auto& m : *names)
          if (item.key() == m || (item.key().size() > m.size() && item.key().compare(item.key().size() - m.size(), m.size(), m) == 0 &&
                                  item.key()[item.key().size() - m.size() - 1] == '.'))
            if (!under_any(item.key(), layer_paths)) keys.push_back(item.key());
      for (const auto& key : keys) {
        auto target = module_at(*base_, key);
        auto layer = std::dynamic_pointer_cast<ModulesToSaveLayer>(target);
        if (!layer) {
          layer = std::make_shared<ModulesToSaveLayer>(target, state_);
          auto [parent, child] = parent_of(*base_, key);
          parent->replace_module(child, layer);
        }
        try {
          layer->add(name);
        } catch (const Error& e) {
          fail(e.kind(), "modules_to_save cannot copy module '" + key + "': " + e.what());
        }
        adapters_[name].layers.push_back(key);
      }
    }
  } catch (...) {
    remove_adapter(name);
    throw;
  }
  if (state_->active.empty()) set_adapter(name);
}

void PeftModel::remove_adapter(const std::string& name) {
  auto entry = adapters_.find(name);
  if (entry != adapters_.end())
    if (const ModelLevelTuner* level = as_model_level(*entry->second.tuner)) level->detach(*base_, name, entry->second.config);
  if (AdapterDict* encoders = prompt_encoders(*this)) encoders->remove(name);
  for (const auto& [path, layer] : adapter_layers()) {
    if (!layer->has_adapter(name)) continue;
    layer->delete_adapter(name);
    if (layer->empty()) {
      auto [parent, child] = parent_of(*base_, path);
      parent->replace_module(child, layer->base_layer());
    }
  }
  for (const auto& child : tuner_->named_children())
    if (auto* dict = dynamic_cast<AdapterDict*>(child.value().get())) dict->remove(name);
  adapters_.erase(name);
  order_.erase(std::remove(order_.begin(), order_.end(), name), order_.end());
  auto& active = state_->active;
  active.erase(std::remove(active.begin(), active.end(), name), active.end());
  if (adapters_.empty()) use_layout(*this, base_, tuner_, false);
}



void PeftModel::delete_adapter(const std::string& name) {
  adapter(name);
  remove_adapter(name);
}

std::vector<std::string> PeftModel::adapter_names() const { return order_; }

const nlohmann::json& PeftModel::adapter_config(const std::string& name) const { return adapter(name).config; }

void PeftModel::set_adapter(const std::string& name) {
  adapter(name);
  state_->active = {name};
  set_trainable(name);
}

void PeftModel::set_active_adapters(const std::vector<std::string>& names) {
  for (const auto& n : names) adapter(n);
  state_->active = names;
}

void PeftModel::set_disabled(bool disabled) { state_->disabled = disabled; }

// Every tensor of adapter `name`, found structurally as PEFT's _get_tuner_state_dict_key_prefixes does: everything
// on its layers except the wrapped module, restricted to this adapter's entries, plus learnable biases and, when an
// embedding is targeted, that embedding's base weight.
static std::vector<AdapterTensor> collect(const NamedLayers& layers, const torch::nn::Module& tuner_module,
                                          models::Model& base, const std::string& name, const nlohmann::json& config,
                                          const Tuner& tuner, const torch::nn::Module& peft) {
  const std::string model_prefix = base_at_root(peft, base) ? "base_model." : "base_model.model.";
  std::vector<AdapterTensor> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& model_key, const std::string& checkpoint_key, const at::Tensor& t, bool trainable,
                 bool required) {
    if (seen.insert(checkpoint_key).second) out.push_back({model_key, checkpoint_key, t, trainable, required});
  };
  // Model-level tensors that layers also hold (VB-LoRA's vector bank, so that its parameter name is PEFT's) are
  // saved once, under the model-level key, as PEFT does.
  std::set<const void*> model_level;
  // Parameters are trained, buffers are frozen state saved with the adapter.
  auto add_dict = [&](const AdapterDict& dict, const std::string& dict_prefix) {
    auto params = dict.named_parameters(false);
    if (const auto* p = params.find(name)) {
      if (model_level.count(p->unsafeGetTensorImpl())) return;
      if (dict.is_persistent(name)) add(dict_prefix, tuner.checkpoint_key(dict_prefix, name), *p, !dict.is_frozen(name), true);
    } else {
      auto& module = dict.module(name);
      for (const auto& p : module.named_parameters(true)) {
        std::string key = dict_prefix + "." + p.key();
        add(key, tuner.checkpoint_key(key, name), p.value(), true, true);
      }
      for (const auto& b : module.named_buffers(true)) {
        std::string key = dict_prefix + "." + b.key();
        add(key, tuner.checkpoint_key(key, name), b.value(), false, true);
      }
    }
  };
  // Model-level state (PEFT's BaseTuner attributes): "base_model.<dict>.<adapter>[.<param>]".
  for (const auto& child : tuner_module.named_children()) {
    auto* dict = dynamic_cast<AdapterDict*>(child.value().get());
    if (dict && dict->contains(name)) add_dict(*dict, "base_model." + child.key() + "." + name);
  }
  for (const auto& t : out) model_level.insert(t.tensor.unsafeGetTensorImpl());
  // Methods acting on the whole model: tensors inside the model (adaption prompts) under PEFT's parameter names, and
  // the prompt encoder "prompt_encoder.<adapter>", whose file key is the virtual tokens' table.
  if (const ModelLevelTuner* level = as_model_level(tuner)) {
    for (const auto& [path, t] : level->model_tensors(base, name, config)) add(model_prefix + path, model_prefix + path, t, true, true);
    if (const torch::nn::Module* encoder = prompt_encoder(peft, name)) {
      std::map<std::string, std::string> file_keys;
      for (const auto& [param, key] : level->encoder_checkpoint_targets(config)) file_keys[param] = key;
      for (const auto& p : encoder->named_parameters(true)) {
        std::string key = std::string(kPromptEncoders) + "." + name + "." + p.key();
        auto file_key = file_keys.find(p.key());
        if (file_key == file_keys.end()) {
          add(key, key, p.value(), true, false);
        } else {
          add(key, file_key->second, p.value(), true, true);
        }
      }
    }
  }
  std::vector<std::string> lora_layer_paths;
  for (const auto& [path, layer] : layers) {
    if (!layer->has_adapter(name)) continue;
    const std::string prefix = model_prefix + path + ".";
    if (auto* mts = dynamic_cast<ModulesToSaveLayer*>(layer)) {
      for (const auto& p : mts->copy(name)->named_parameters(true))
        add(prefix + "modules_to_save." + name + "." + p.key(), prefix + p.key(), p.value(), true, true);
      continue;
    }
    lora_layer_paths.push_back(path);
    for (const auto& child : layer->named_children()) {
      if (child.key() == layer->base_name()) continue;
      if (auto* dict = dynamic_cast<AdapterDict*>(child.value().get())) {
        if (dict->contains(name)) add_dict(*dict, prefix + child.key() + "." + name);
      } else {
        for (const auto& p : child.value()->named_parameters(true)) {
          std::string key = prefix + child.key() + "." + p.key();
          add(key, tuner.checkpoint_key(key, name), p.value(), true, true);
        }
      }
    }
  }
  const std::string bias = config.value("bias", std::string("none"));
  if (bias == "all") {
    for (const auto& p : base.named_parameters(true)) {
      const std::string& key = p.key();
      bool adapter_internal = false;
      for (const auto& path : lora_layer_paths)
        if (starts_with(key, path + ".") && !starts_with(key, path + ".base_layer.")) adapter_internal = true;
      // PEFT keeps every ".bias" of the adapter-filtered state dict, the original and this adapter's copy inside
      // a modules_to_save wrapper included (so a saved classifier bias appears under three names).
      auto copy = key.find(".modules_to_save.");
      bool other_copy = copy != std::string::npos && key.compare(copy, 17 + name.size() + 1,
                                                                 ".modules_to_save." + name + ".") != 0;
      if ((key == "bias" || (key.size() > 5 && key.compare(key.size() - 5, 5, ".bias") == 0)) && !adapter_internal &&
          !other_copy)
        add(model_prefix + key, remove_adapter_name(model_prefix + key, name), p.value(), true, true);
    }
  } else if (bias.size() > 5 && bias.compare(bias.size() - 5, 5, "_only") == 0) {
    // "<method>_only" (lora_only, vblora_only, ...): the biases of the method's layers, as PEFT reads any such value.
    for (const auto& path : lora_layer_paths) {
      auto params = module_at(base, path + ".base_layer")->named_parameters(false);
      if (const auto* b = params.find("bias"); b && b->defined())
        add(model_prefix + path + ".base_layer.bias", model_prefix + path + ".base_layer.bias", *b, true, true);
    }
  }
  // PEFT saves a targeted embedding layer's weights too (save_embedding_layers="auto"), whatever the method wrapping
  // it, except for trainable tokens.
  if (auto targets = config.contains("target_modules") && config["target_modules"].is_array()
                         ? config_strings(config, "target_modules")
                         : std::nullopt) {
    bool embedding_targeted = std::count(targets->begin(), targets->end(), "embed_tokens") ||
                              std::count(targets->begin(), targets->end(), "lm_head");
    if (embedding_targeted && config.value("peft_type", std::string()) != "TRAINABLE_TOKENS")
      for (const auto& path : lora_layer_paths) {
        auto* layer = dynamic_cast<AdapterLayer*>(module_at(base, path).get());
        if (layer && dynamic_cast<torch::nn::EmbeddingImpl*>(layer->base_layer().get()))
          add(model_prefix + path + ".base_layer.weight", model_prefix + path + ".base_layer.weight",
              layer->base_layer()->named_parameters(false)["weight"], false, false);
      }
  }
  return out;
}

io::TensorMap PeftModel::adapter_state_dict(const std::string& name) const {
  const Adapter& a = adapter(name);
  io::TensorMap out;
  torch::nn::Module* encoder = prompt_encoder(*this, name);
  for (const auto& t : collect(adapter_layers(), *tuner_, *base_, name, a.config, *a.tuner, *this))
    if (!encoder || t.model_key.compare(0, std::strlen(kPromptEncoders), kPromptEncoders) != 0)
      out[t.checkpoint_key] = t.tensor.detach();
  // PEFT saves what the prompt encoder outputs (get_prompt_embedding_to_save), not its parameters.
  if (encoder)
    for (const auto& [key, t] : as_model_level(*a.tuner)->encoder_checkpoint(*encoder, a.config)) out[key] = t;
  a.tuner->to_checkpoint(out, a.config);
  return out;
}

void PeftModel::set_trainable(const std::string& name) {
  const Adapter& a = adapter(name);
  for (auto& p : parameters(true)) p.set_requires_grad(false);
  for (auto& t : collect(adapter_layers(), *tuner_, *base_, name, a.config, *a.tuner, *this))
    if (t.trainable) t.tensor.set_requires_grad(true);
}

std::vector<std::pair<std::string, at::Tensor>> PeftModel::trainable_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;  // tied weights appear under several names
  for (const auto& p : named_parameters(true))
    if (p.value().requires_grad() && seen.insert(p.value().unsafeGetTensorImpl()).second) out.emplace_back(p.key(), p.value());
  return out;
}

int64_t PeftModel::trainable_parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : trainable_parameters()) n += t.numel();
  return n;
}

void PeftModel::load_adapter(const std::string& dir, const std::string& name, bool trainable) {
  check_name(name);
  nlohmann::json config = read_adapter_config(dir);
  if (const ModelLevelTuner* level = as_model_level(tuner_for(config["peft_type"].get<std::string>())))
    config = level->config_for_load(config);
  std::string weights_path = io::join_path(dir, kWeightsFile);
  if (!io::is_regular_file(weights_path))
    fail(ErrorKind::NotFound, "adapter directory '" + dir + "' has no " + kWeightsFile);
  io::TensorMap weights = io::read_safetensors(weights_path);
  add_adapter(name, config);
  std::vector<std::string> problems;
  try {
    const Adapter& a = adapter(name);
    a.tuner->from_checkpoint(weights, a.config);
    std::map<std::string, AdapterTensor> by_checkpoint;
    for (auto& t : collect(adapter_layers(), *tuner_, *base_, name, a.config, *a.tuner, *this)) by_checkpoint.emplace(t.checkpoint_key, t);
    for (const auto& [key, value] : weights) {
      auto it = by_checkpoint.find(key);
      if (it == by_checkpoint.end()) {
        problems.push_back("unexpected key '" + key + "'");
      } else if (it->second.tensor.sizes() != value.sizes()) {
        problems.push_back("key '" + key + "' has shape " + c10::str(value.sizes()) + ", the model expects " +
                           c10::str(it->second.tensor.sizes()));
      }
    }
    for (const auto& [key, t] : by_checkpoint)
      if (t.required && !weights.count(key)) problems.push_back("missing key '" + key + "'");
    if (problems.empty()) {
      at::NoGradGuard no_grad;
      for (const auto& [key, value] : weights) by_checkpoint.at(key).tensor.copy_(value);
    }
  } catch (...) {
    remove_adapter(name);
    throw;
  }
  if (!problems.empty()) {
    remove_adapter(name);
    std::string message = "adapter '" + dir + "' does not fit the model: ";
    for (size_t i = 0; i < problems.size() && i < 10; ++i) message += (i ? "; " : "") + problems[i];
    if (problems.size() > 10) message += "; and " + std::to_string(problems.size() - 10) + " more";
    fail(ErrorKind::Format, message);
  }
  if (trainable) {
    set_trainable(name);
  } else {
    for (auto& p : parameters(true)) p.set_requires_grad(false);
  }
  if (state_->active.size() == 1 && state_->active[0] == name) return;
  if (state_->active.empty()) state_->active = {name};
}

void PeftModel::save_adapter(const std::string& dir, const std::string& name) const {
  const Adapter& a = adapter(name);
  make_directories(dir);
  io::TensorMap tensors;
  for (const auto& [key, t] : adapter_state_dict(name)) tensors[key] = t.contiguous();
  nlohmann::json config = a.config;
  config["inference_mode"] = true;
  io::write_safetensors(io::join_path(dir, kWeightsFile), tensors, {{"format", "pt"}});
  io::write_text_file_atomic(io::join_path(dir, kConfigFile), config.dump(2) + "\n");
}

void PeftModel::merge(const std::vector<std::string>& adapters) {
  std::vector<std::string> names = adapters.empty() ? state_->active : adapters;
  for (const auto& n : names)
    if (as_model_level(*adapter(n).tuner))
      fail(ErrorKind::Unsupported, adapter(n).tuner->peft_type() +
                                       " adapters cannot be merged into the base weights: they act on the model as a whole "
                                       "(virtual tokens, prefixes or terms inside attention), which no weight of the "
                                       "base model expresses");
  auto layers = adapter_layers();
  for (const auto& [path, layer] : layers)
    if (!dynamic_cast<ModulesToSaveLayer*>(layer) && !layer->can_merge())
      fail(ErrorKind::Unsupported, layer->peft_type() + " adapters cannot be merged into the base weights");
  for (const auto& [path, layer] : layers)
    if (!dynamic_cast<ModulesToSaveLayer*>(layer)) layer->merge(names);
}

void PeftModel::unmerge() {
  for (const auto& [path, layer] : adapter_layers()) layer->unmerge();
}

std::shared_ptr<models::Model> PeftModel::merge_and_unload() {
  if (!state_->disabled) merge();
  for (const auto& [path, layer] : adapter_layers()) {
    std::shared_ptr<torch::nn::Module> keep = layer->base_layer();
    if (auto* mts = dynamic_cast<ModulesToSaveLayer*>(layer))
      for (const auto& active : state_->active)
        if (mts->has_adapter(active)) {
          keep = mts->copy(active);
          break;
        }
    auto [parent, child] = parent_of(*base_, path);
    parent->replace_module(child, keep);
  }
  adapters_.clear();
  order_.clear();
  state_->active.clear();
  return base_;
}

bool PeftModel::supports_kv_cache() const {
  if (state_->disabled) return base_->supports_kv_cache();
  for (const auto& name : state_->active) {
    const Adapter& a = adapter(name);
    if (!a.tuner->supports_kv_cache(a.config)) return false;
  }
  return base_->supports_kv_cache();
}

models::ModelOutput PeftModel::forward(const models::ModelInputs& inputs) {
  state_->row_adapters = nullptr;
  if (inputs.use_cache && !state_->disabled)
    for (const auto& name : state_->active)
      if (const Adapter& a = adapter(name); !a.tuner->supports_kv_cache(a.config))
        fail(ErrorKind::InvalidArgument, "adapter '" + name + "' (" + a.tuner->peft_type() +
                                             ") gates by the mean over the whole sequence, which a KV cache cannot "
                                             "extend token by token: call forward with use_cache false (generate() "
                                             "recomputes the sequence itself)");
  // Prompt learning rewrites the inputs (virtual tokens, prefixes) for the active adapter, as PEFT's forward does.
  models::ModelInputs adapted;
  const models::ModelInputs* use = &inputs;
  if (!state_->disabled)
    for (const auto& name : state_->active) {
      const Adapter& a = adapter(name);
      if (const ModelLevelTuner* level = as_model_level(*a.tuner)) {
        adapted = level->adapt_inputs(prompt_encoder(*this, name), a.config, *base_, *use);
        use = &adapted;
      }
    }
  models::ModelOutput out = base_->forward(*use);
  if (out.loss.defined()) {
    NamedLayers layers;
    bool listed = false;  // listing the layers walks the whole model: only when a term is wanted
    for (const auto& name : state_->active) {
      const Adapter& a = adapter(name);
      if (!a.tuner->loss_term_always() && (!is_training() || state_->disabled)) continue;
      if (!listed) {
        layers = adapter_layers();
        listed = true;
      }
      at::Tensor term = a.tuner->training_loss_term(layers, name, a.config);
      if (term.defined()) out.loss = out.loss + term;
    }
  }
  return out;
}

void PeftModel::after_optimizer_step(int64_t step) {
  auto layers = adapter_layers();
  for (const auto& name : state_->active) {
    Adapter& a = adapters_.at(name);
    a.tuner->after_optimizer_step(layers, name, a.config, step);
  }
}

models::ModelOutput PeftModel::forward_mixed(const models::ModelInputs& inputs, const std::vector<std::string>& rows) {
  for (const auto& n : rows)
    if (n != "__base__" && as_model_level(*adapter(n).tuner))
      fail(ErrorKind::Unsupported, adapter(n).tuner->peft_type() + " adapters cannot serve a mixed batch: PEFT routes "
                                   "rows to adapters inside wrapped layers, which these methods do not have");
  struct Reset {
    AdapterState& s;
    ~Reset() { s.row_adapters = nullptr; }
  } reset{*state_};
  state_->row_adapters = &rows;
  return base_->forward(inputs);
}

void PeftModel::add_weighted_adapter(const std::vector<std::string>& adapters, const std::vector<double>& weights,
                                     const std::string& name, const std::string& combination_type, int64_t svd_rank) {
  if (adapters.empty() || adapters.size() != weights.size())
    fail(ErrorKind::InvalidArgument, "add_weighted_adapter needs one weight per adapter (" + std::to_string(adapters.size()) +
                                         " adapters, " + std::to_string(weights.size()) + " weights)");
  std::vector<int64_t> ranks;
  for (const auto& n : adapters) {
    const Adapter& a = adapter(n);
    if (a.tuner->peft_type() != "LORA")
      fail(ErrorKind::Unsupported, "add_weighted_adapter combines LORA adapters; '" + n + "' is " + a.tuner->peft_type());
    int64_t r = config_int(a.config, "r", 8);
    for (auto it = a.config["rank_pattern"].begin(); it != a.config["rank_pattern"].end(); ++it)
      r = std::max<int64_t>(r, it.value().get<int64_t>());
    ranks.push_back(r);
  }
  std::string type = adapters.size() == 1 ? "linear" : combination_type;
  int64_t new_rank;
  if (type == "linear") {
    if (std::set<int64_t>(ranks.begin(), ranks.end()).size() != 1)
      fail(ErrorKind::InvalidArgument, "combination_type linear needs adapters of the same rank");
    new_rank = ranks[0];
  } else if (type == "cat") {
    new_rank = 0;
    for (auto r : ranks) new_rank += r;
  } else if (type == "svd") {
    new_rank = svd_rank > 0 ? svd_rank : *std::max_element(ranks.begin(), ranks.end());
  } else {
    fail(ErrorKind::Unsupported, "combination_type '" + combination_type + "' is not supported (linear, cat, svd)");
  }
  // The new adapter targets the union of the inputs' targets, with scaling 1 (lora_alpha = r) as PEFT sets it.
  nlohmann::json config = adapter(adapters[0]).config;
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& n : adapters) {
    const auto& t = adapter(n).config["target_modules"];
    if (!t.is_array()) fail(ErrorKind::Unsupported, "add_weighted_adapter needs target_modules lists");
    for (const auto& m : t)
      if (std::find(targets.begin(), targets.end(), m) == targets.end()) targets.push_back(m);
  }
  config["r"] = new_rank;
  config["lora_alpha"] = new_rank;
  config["target_modules"] = targets;
  config["rank_pattern"] = nlohmann::json::object();
  config["alpha_pattern"] = nlohmann::json::object();
  config["use_dora"] = false;
  config["modules_to_save"] = nullptr;
  std::vector<std::string> active = state_->active;
  add_adapter(name, config);
  state_->active = active;
  at::NoGradGuard no_grad;
  for (const auto& [path, base_layer] : adapter_layers()) {
    auto* layer = dynamic_cast<LoraLayer*>(base_layer);
    if (!layer || !layer->has_adapter(name)) continue;
    at::Tensor target_a = layer->lora_a(name);
    at::Tensor target_b = layer->lora_b(name);
    target_a.zero_();
    target_b.zero_();
    std::vector<std::string> present;
    std::vector<double> w;
    for (size_t i = 0; i < adapters.size(); ++i)
      if (layer->has_adapter(adapters[i])) {
        present.push_back(adapters[i]);
        w.push_back(weights[i]);
      }
    if (present.empty()) continue;
    if (type == "cat") {
      std::vector<at::Tensor> as, bs;
      for (size_t i = 0; i < present.size(); ++i) {
        as.push_back(layer->lora_a(present[i]) * (w[i] * layer->scaling(present[i])));
        bs.push_back(layer->lora_b(present[i]));
      }
      at::Tensor a = at::cat(as, 0);
      at::Tensor b = at::cat(bs, 1);
      target_a.slice(0, 0, a.size(0)).copy_(a);
      target_b.slice(1, 0, b.size(1)).copy_(b);
    } else if (type == "linear") {
      at::Tensor a = at::zeros_like(target_a);
      at::Tensor b = at::zeros_like(target_b);
      for (size_t i = 0; i < present.size(); ++i) {
        double ws = w[i] * layer->scaling(present[i]);
        double sign = ws >= 0 ? 1.0 : -1.0;
        a += layer->lora_a(present[i]) * (std::sqrt(std::abs(ws)) * sign);
        b += layer->lora_b(present[i]) * std::sqrt(std::abs(ws));
      }
      target_a.copy_(a);
      target_b.copy_(b);
    } else {
      // svd: the weighted sum of the deltas (each already scaled), truncated to new_rank singular triplets.
      at::Tensor delta;
      for (size_t i = 0; i < present.size(); ++i) {
        at::Tensor d = layer->delta_weight(present[i]) * w[i];
        delta = delta.defined() ? delta + d : d;
      }
      // delta_weight is in the base weight layout; the SVD factors B [out, r] @ A [r, in].
      bool transposed = layer->is_embedding() || dynamic_cast<models::Conv1DImpl*>(layer->base_layer().get());
      if (transposed) delta = delta.t();
      auto [u, s, vh] = at::linalg_svd(delta, true);
      u = at::matmul(u.slice(1, 0, new_rank), at::diag(s.slice(0, 0, new_rank)));
      vh = vh.slice(0, 0, new_rank);
      target_a.copy_(vh);
      target_b.copy_(u);
    }
  }
}

}  // namespace peft4j::tuners
