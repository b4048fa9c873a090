#include "peft4j/tuners/weight_tying.h"

#include <algorithm>
#include <regex>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/module_names.h"
#include "peft4j/tuners/tuner.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

namespace {

// PEFT's EMBEDDING_LAYER_NAMES: the last names that mark an embedding in modules_to_save / target_modules.
bool embedding_layer_name(const std::string& name) {
  std::string last = name.substr(name.rfind('.') + 1);
  return last == "embed_tokens" || last == "lm_head";
}

// The weight a module computes with: through adapter layers to the module they wrap.
const void* weight_impl(torch::nn::Module& m) {
  torch::nn::Module* module = &m;
  while (auto* layer = dynamic_cast<AdapterLayer*>(module)) module = layer->base_layer().get();
  auto params = module->named_parameters(false);
  const auto* w = params.find("weight");
  return w && w->defined() ? w->unsafeGetTensorImpl() : nullptr;
}

// PEFT removes from a list, for each tied key, the first entry m with re.match(rf"(^|.*\.){m}($|\..*)", key).
void remove_tied_entries(nlohmann::json& names, const std::vector<std::string>& tied) {
  for (const auto& key : tied)
    for (auto it = names.begin(); it != names.end(); ++it)
      if (names_module_pattern(it->get<std::string>(), key)) {
        names.erase(it);
        break;
      }
}

void add_once(nlohmann::json& names, const std::string& name) {
  if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
}

}  // namespace

std::string input_embedding_path(models::Model& model) {
  torch::nn::Module* embedding = &model.input_embeddings();
  for (const auto& item : model.named_modules("", false))
    if (item.value().get() == embedding) return item.key();
  return "";
}

std::vector<std::string> modules_tied_to_input_embedding(models::Model& model) {
  const nlohmann::json& config = model.config();
  if (config.is_object() && config.contains("tie_word_embeddings") && config["tie_word_embeddings"] == false) return {};
  const std::string input = input_embedding_path(model);
  const void* tied = weight_impl(model.input_embeddings());
  std::vector<std::string> out;
  if (!tied) return out;
  for (const auto& item : model.named_modules("", false)) {
    const std::string& path = item.key();
    // Adapter layers count once, under their own path, not again for the module they wrap.
    bool inside = std::any_of(out.begin(), out.end(), [&](const std::string& p) { return path.rfind(p + ".", 0) == 0; }) ||
                  path.rfind(input + ".", 0) == 0;
    if (path.empty() || path == input || inside) continue;
    auto* module = item.value().get();
    bool leaf = dynamic_cast<AdapterLayer*>(module) || dynamic_cast<torch::nn::LinearImpl*>(module) ||
                dynamic_cast<torch::nn::EmbeddingImpl*>(module);
    if (leaf && weight_impl(*module) == tied) out.push_back(path);
  }
  return out;
}

TiedModules ensure_weight_tying(nlohmann::json& config, models::Model& model) {
  TiedModules ties;
  if (!config.contains("ensure_weight_tying") || !config_bool(config, "ensure_weight_tying")) return ties;
  const std::vector<std::string> tied = modules_tied_to_input_embedding(model);
  if (tied.empty()) {
    warn("ensure_weight_tying is set, but the model has no modules tied to its input embedding");
    return ties;
  }
  const std::string embedding = input_embedding_path(model);
  nlohmann::json& save = config["modules_to_save"];
  const bool embedding_to_save =
      save.is_array() && std::any_of(save.begin(), save.end(), [](const nlohmann::json& m) {
        return m.is_string() && embedding_layer_name(m.get<std::string>());
      });
  nlohmann::json& targets = config["target_modules"];
  bool embedding_in_target = false;
  if (targets.is_string()) {
    std::regex pattern(targets.get<std::string>());
    embedding_in_target = std::regex_match("embed_tokens", pattern) || std::regex_match("lm_head", pattern);
  } else if (targets.is_array()) {
    embedding_in_target = std::any_of(targets.begin(), targets.end(), [](const nlohmann::json& m) {
      return m.is_string() && embedding_layer_name(m.get<std::string>());
    });
  }
  if (embedding_to_save) {
    add_once(save, embedding);
    remove_tied_entries(save, tied);
    ties.modules_to_tie = tied;
  } else if (embedding_in_target) {
    if (targets.is_string()) {
      // PEFT wraps the pattern once; a loaded config already holds the wrapped form.
      std::string escaped = std::regex_replace(embedding, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
      std::string suffix = "|^" + escaped + "$)";
      std::string pattern = targets.get<std::string>();
      if (!(pattern.rfind("(?:", 0) == 0 && pattern.size() > suffix.size() &&
            pattern.compare(pattern.size() - suffix.size(), suffix.size(), suffix) == 0))
        targets = "(?:" + pattern + suffix;
    } else {
      add_once(targets, embedding);
      remove_tied_entries(targets, tied);
    }
    ties.targets_to_tie = tied;
  } else {
    warn("ensure_weight_tying is set, but neither modules_to_save nor target_modules names a tied module");
  }
  return ties;
}

}  // namespace peft4j::tuners
