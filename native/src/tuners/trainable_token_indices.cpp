#include "peft4j/tuners/trainable_token_indices.h"

#include <algorithm>
#include <map>
#include <set>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/weight_tying.h"

namespace peft4j::tuners {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool token_list(const nlohmann::json& v) {
  return v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& i) {
           return i.is_number_integer() && i.get<int64_t>() >= 0;
         });
}

// The layer that holds `path`'s trainable tokens, wrapping the module there first (PEFT's _set_trainable with
// TrainableTokensWrapper; a module already wrapped gets one more adapter).
TrainableTokensLayer& token_layer(models::Model& model, const std::string& path, const std::shared_ptr<AdapterState>& state) {
  auto target = module_at(model, path);
  if (auto* wrapper = dynamic_cast<TrainableTokensWrapper*>(target.get())) return wrapper->token_adapter();
  if (dynamic_cast<AdapterLayer*>(target.get()))
    fail(ErrorKind::InvalidArgument, "LORA config field 'trainable_token_indices' names module '" + path +
                                         "', which target_modules or modules_to_save already adapt: train its tokens "
                                         "one way only");
  auto layer = std::make_shared<TrainableTokensLayer>(target, state, /*saves_tied=*/false);
  auto wrapper = std::make_shared<TrainableTokensWrapper>(layer);
  auto [parent, child] = parent_of(model, path);
  parent->replace_module(child, wrapper);
  return *layer;
}

}  // namespace

TrainableTokensWrapper::TrainableTokensWrapper(std::shared_ptr<TrainableTokensLayer> token_adapter)
    : token_adapter_(register_module("token_adapter", std::move(token_adapter))) {}

at::Tensor TrainableTokensWrapper::forward(const at::Tensor& x) { return token_adapter_->forward(x); }

void check_trainable_token_indices(const nlohmann::json& config) {
  const nlohmann::json& v = config["trainable_token_indices"];
  if (v.is_null() || token_list(v)) return;
  if (v.is_object() && std::all_of(v.begin(), v.end(), token_list)) return;
  fail(ErrorKind::InvalidArgument, "LORA config field 'trainable_token_indices' must be a list of token ids "
                                   "(non-negative integers) or an object mapping module names to such lists, got " +
                                       v.dump());
}

std::vector<std::string> add_trainable_token_indices(models::Model& model, const std::string& adapter,
                                                     const nlohmann::json& config,
                                                     const std::shared_ptr<AdapterState>& state) {
  if (!config.contains("trainable_token_indices") || config["trainable_token_indices"].is_null()) return {};
  const nlohmann::json& indices = config["trainable_token_indices"];
  const std::string embedding = input_embedding_path(model);
  std::map<std::string, std::vector<int64_t>> targets;
  if (indices.is_array()) {
    targets[embedding.empty() ? "embed_tokens" : embedding] = indices.get<std::vector<int64_t>>();
  } else {
    for (const auto& [name, ids] : indices.items()) targets[name] = ids.get<std::vector<int64_t>>();
  }
  if (config["modules_to_save"].is_array())
    for (const auto& [name, ids] : targets)
      if (std::find(config["modules_to_save"].begin(), config["modules_to_save"].end(), name) !=
          config["modules_to_save"].end())
        fail(ErrorKind::InvalidArgument, "module '" + name + "' is in both modules_to_save (trained fully) and "
                                         "trainable_token_indices: name it in one of them only");

  const std::vector<std::string> tied = modules_tied_to_input_embedding(model);
  const bool ensure = config_bool(config, "ensure_weight_tying");
  // Several targets under tied weights: the tied ones share one set of rows when their indices agree (the tied
  // modules then follow the embedding instead of being wrapped on their own).
  bool mismatch = false;
  std::set<std::string> skip;
  if (targets.size() > 1 && !tied.empty()) {
    std::vector<std::string> tied_keys;
    for (const auto& [name, ids] : targets) {
      bool is_tied = ends_with(embedding, name);
      for (const auto& t : tied) {
        std::string dotted = "." + t + ".";
        is_tied = is_tied || ends_with(t, name) || dotted.find("." + name + ".") != std::string::npos;
      }
      if (is_tied) tied_keys.push_back(name);
    }
    if (tied_keys.size() >= 2) {
      for (const auto& key : tied_keys) mismatch = mismatch || targets[key] != targets[tied_keys.front()];
      if (mismatch && ensure) {
        std::string layers;
        for (const auto& key : tied_keys) layers += (layers.empty() ? "" : ", ") + key + ": " + nlohmann::json(targets[key]).dump();
        fail(ErrorKind::InvalidArgument, "ensure_weight_tying cannot tie layers that trainable_token_indices gives "
                                         "different token indices (" + layers + "): use the same indices for all "
                                         "tied layers or set ensure_weight_tying false");
      }
      if (!mismatch)
        for (const auto& key : tied_keys)
          if (std::count(tied.begin(), tied.end(), key)) skip.insert(key);
    }
  }

  std::vector<std::string> paths;
  std::vector<std::string> modules;
  for (const auto& item : model.named_modules("", false)) modules.push_back(item.key());
  for (const auto& [name, ids] : targets) {
    if (skip.count(name)) continue;
    bool found = false;
    for (const auto& path : modules) {
      // PEFT's _set_trainable matches a plain suffix of the module path.
      if (path.empty() || !ends_with(path, name)) continue;
      auto module = module_at(model, path);
      if (!dynamic_cast<torch::nn::EmbeddingImpl*>(module.get()) && !dynamic_cast<torch::nn::LinearImpl*>(module.get()) &&
          !dynamic_cast<TrainableTokensWrapper*>(module.get()) && !dynamic_cast<AdapterLayer*>(module.get()))
        continue;
      found = true;
      TrainableTokensLayer& layer = token_layer(model, path, state);
      if (!layer.has_adapter(adapter)) layer.add(adapter, ids, /*from_base=*/true);  // PEFT's wrapper starts from the base rows
      paths.push_back(path + ".token_adapter");
    }
    if (!found)
      fail(ErrorKind::InvalidArgument, "LORA config field 'trainable_token_indices' names module '" + name +
                                           "', which the model does not have (or which is not an Embedding or Linear)");
  }

  // Tied modules follow the input embedding's rows (PEFT's should_apply_tying).
  auto* input = dynamic_cast<TrainableTokensWrapper*>(module_at(model, embedding).get());
  if (!tied.empty() && input && input->token_adapter().has_adapter(adapter) && (ensure || !mismatch))
    for (const auto& path : tied) {
      TrainableTokensLayer& layer = token_layer(model, path, state);
      if (!layer.has_adapter(adapter)) layer.add_tied(adapter, input->token_adapter());
      paths.push_back(path + ".token_adapter");
    }
  return paths;
}

}  // namespace peft4j::tuners
