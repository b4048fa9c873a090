// PEFT-format checkpoint I/O of a PeftModel: which tensors make up an adapter (found structurally, as PEFT's
// get_peft_model_state_dict does), their keys in adapter_model.safetensors, and reading/writing adapter directories.
#include <algorithm>
#include <cstring>
#include <set>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/model_level.h"
#include "peft4j/tuners/model_level_dicts.h"
#include "peft4j/tuners/modules_to_save.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::tuners {

namespace {

const char* kConfigFile = "adapter_config.json";
const char* kWeightsFile = "adapter_model.safetensors";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

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

std::vector<PeftModel::AdapterTensor> PeftModel::adapter_tensors(const std::string& name) const {
  const Adapter& entry = adapter(name);
  const nlohmann::json& config = entry.config;
  const Tuner& tuner = *entry.tuner;
  const NamedLayers layers = adapter_layers();
  models::Model& base = *base_;
  const std::string model_prefix = base_at_root() ? "base_model." : "base_model.model.";
  std::vector<AdapterTensor> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& model_key, const std::string& checkpoint_key, const at::Tensor& t, bool trainable,
                 bool required) {
    if (seen.insert(checkpoint_key).second) out.push_back({model_key, checkpoint_key, t, trainable, required});
  };
  // Model-level tensors that layers also hold (VB-LoRA's vector bank, TinyLoRA's v, Uni-LoRA's θ_d, so that their
  // parameter names are PEFT's) are saved once, under the model-level key, as PEFT does.
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
        if (model_level.count(p.value().unsafeGetTensorImpl())) continue;
        std::string key = dict_prefix + "." + p.key();
        add(key, tuner.checkpoint_key(key, name), p.value(), !dict.is_frozen(name), true);
      }
      for (const auto& b : module.named_buffers(true)) {
        std::string key = dict_prefix + "." + b.key();
        add(key, tuner.checkpoint_key(key, name), b.value(), false, true);
      }
    }
  };
  // Model-level state (PEFT's BaseTuner attributes): "base_model.<dict>.<adapter>[.<param>]".
  for (const auto& [path, dict] : model_level_dicts(*tuner_))
    if (dict->contains(name)) add_dict(*dict, "base_model." + path + "." + name);
  for (const auto& t : out) model_level.insert(t.tensor.unsafeGetTensorImpl());
  // Methods acting on the whole model: tensors inside the model (adaption prompts) under PEFT's parameter names, and
  // the prompt encoder "prompt_encoder.<adapter>", whose file key is the virtual tokens' table.
  if (const ModelLevelTuner* level = as_model_level(tuner)) {
    for (const auto& [path, t] : level->model_tensors(base, name, config)) add(model_prefix + path, model_prefix + path, t, true, true);
    if (const torch::nn::Module* encoder = prompt_encoder(name)) {
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
    if (!layer->has_adapter(name) || !layer->saves_adapter(name)) continue;
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
  // PEFT saves a targeted embedding layer's weights too (save_embedding_layers="auto"): when target_modules names
  // embed_tokens or lm_head (a regular expression matching a module so named), the base weight of the wrapped input
  // embedding and of a wrapped lm_head, whatever the method, except with trainable tokens (TRAINABLE_TOKENS, LoRA's
  // trainable_token_indices), whose point is to save little.
  auto last_name = [](const std::string& path) { return path.substr(path.rfind('.') + 1); };
  const bool embedding_name_targeted = [&] {
    if (!config.contains("target_modules")) return false;
    const auto& targets = config["target_modules"];
    if (targets.is_array())
      return std::any_of(targets.begin(), targets.end(), [](const nlohmann::json& t) {
        return t == "embed_tokens" || t == "lm_head";
      });
    if (!targets.is_string() || targets == "all-linear") return false;
    return std::any_of(lora_layer_paths.begin(), lora_layer_paths.end(), [&](const std::string& path) {
      return last_name(path) == "embed_tokens" || last_name(path) == "lm_head";
    });
  }();
  const bool trainable_tokens = config.value("peft_type", std::string()) == "TRAINABLE_TOKENS" ||
                                (config.contains("trainable_token_indices") && !config["trainable_token_indices"].is_null());
  if (embedding_name_targeted && !trainable_tokens)
    for (const auto& path : lora_layer_paths) {
      auto* layer = dynamic_cast<AdapterLayer*>(module_at(base, path).get());
      if (!layer) continue;
      const bool embedding = dynamic_cast<torch::nn::EmbeddingImpl*>(layer->base_layer().get()) != nullptr;
      const bool output = path == "lm_head" && dynamic_cast<torch::nn::LinearImpl*>(layer->base_layer().get());
      if (embedding || output)
        add(model_prefix + path + ".base_layer.weight", model_prefix + path + ".base_layer.weight",
            layer->base_layer()->named_parameters(false)["weight"], false, false);
    }
  return out;
}

io::TensorMap PeftModel::adapter_state_dict(const std::string& name) const {
  const Adapter& a = adapter(name);
  io::TensorMap out;
  torch::nn::Module* encoder = prompt_encoder(name);
  for (const auto& t : adapter_tensors(name))
    if (!encoder || t.model_key.compare(0, std::strlen(kPromptEncoders), kPromptEncoders) != 0)
      out[t.checkpoint_key] = t.tensor.detach();
  // PEFT saves what the prompt encoder outputs (get_prompt_embedding_to_save), not its parameters.
  if (encoder)
    for (const auto& [key, t] : as_model_level(*a.tuner)->encoder_checkpoint(*encoder, a.config)) out[key] = t;
  a.tuner->layers_to_checkpoint(adapter_layers(), name, a.config, out);
  a.tuner->to_checkpoint(out, a.config);
  return out;
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
  BaseWeights changed;
  add_adapter(name, config, nullptr, &changed);
  std::vector<std::string> problems;
  try {
    const Adapter& a = adapter(name);
    a.tuner->from_checkpoint(weights, a.config);
    a.tuner->layers_from_checkpoint(adapter_layers(), name, a.config, weights);
    std::map<std::string, AdapterTensor> by_checkpoint;
    for (auto& t : adapter_tensors(name)) by_checkpoint.emplace(t.checkpoint_key, t);
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
    restore(changed);
    throw;
  }
  if (!problems.empty()) {
    remove_adapter(name);
    restore(changed);
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
  io::make_directories(dir);
  io::TensorMap tensors;
  for (const auto& [key, t] : adapter_state_dict(name)) tensors[key] = t.contiguous();
  nlohmann::json config = a.config;
  config["inference_mode"] = true;
  io::write_safetensors(io::join_path(dir, kWeightsFile), tensors, {{"format", "pt"}});
  io::write_text_file_atomic(io::join_path(dir, kConfigFile), config.dump(2) + "\n");
}

}  // namespace peft4j::tuners
