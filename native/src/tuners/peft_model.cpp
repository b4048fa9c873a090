#include "peft4j/tuners/peft_model.h"

#include <algorithm>
#include <set>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/module_names.h"
#include "peft4j/tuners/model_level.h"
#include "peft4j/tuners/model_level_dicts.h"
#include "peft4j/tuners/modules_to_save.h"
#include "peft4j/tuners/trainable_token_indices.h"
#include "peft4j/tuners/weight_tying.h"

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

bool under_any(const std::string& key, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes)
    if (key.compare(0, p.size() + 1, p + ".") == 0) return true;
  return false;
}

// PEFT's prompt_encoder ModuleDict (a child of the PeftModel, beside base_model), or nullptr before the first
// prompt-learning adapter.
AdapterDict* prompt_encoders(const torch::nn::Module& peft) {
  auto children = peft.named_children();
  const auto* dict = children.find(PeftModel::kPromptEncoders);
  return dict ? dynamic_cast<AdapterDict*>(dict->get()) : nullptr;
}

// Puts `module` where the adapter layer at `path` sits; a layer inside a TrainableTokensWrapper takes the wrapper's
// place, so that an unwrapped model has its original module tree.
void put_back(torch::nn::Module& root, const std::string& path, std::shared_ptr<torch::nn::Module> module) {
  auto [parent, child] = parent_of(root, path);
  if (dynamic_cast<TrainableTokensWrapper*>(parent.get())) std::tie(parent, child) = parent_of(root, path.substr(0, path.rfind('.')));
  parent->replace_module(child, std::move(module));
}

}  // namespace

torch::nn::Module* PeftModel::prompt_encoder(const std::string& adapter) const {
  AdapterDict* dict = prompt_encoders(*this);
  return dict && dict->contains(adapter) ? &dict->module(adapter) : nullptr;
}

bool PeftModel::base_at_root() const { return named_children()["base_model"].get() == base_.get(); }

// Puts PEFT's layout in place: the base model at "base_model" itself (prompt learning) or inside the tuner module
// there, as "base_model.model" (every other method).
void PeftModel::use_layout(bool at_root) {
  if (base_at_root() == at_root) return;
  unregister_module("base_model");
  if (at_root) {
    register_module("base_model", base_);
  } else {
    register_module("base_model", tuner_);
  }
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

void PeftModel::add_adapter(const std::string& name, const nlohmann::json& input,
                            const std::vector<models::ModelInputs>& data) {
  add_adapter(name, input, data.empty() ? nullptr : &data, nullptr);
}

void PeftModel::restore(const BaseWeights& changed) {
  at::NoGradGuard no_grad;
  for (const auto& [param, copy] : changed) param.copy_(copy);
}

void PeftModel::add_adapter(const std::string& name, const nlohmann::json& input,
                            const std::vector<models::ModelInputs>* data, BaseWeights* changed) {
  check_name(name);
  if (adapters_.count(name)) fail(ErrorKind::InvalidArgument, "adapter '" + name + "' already exists");
  if (!input.is_object() || !input.contains("peft_type") || !input["peft_type"].is_string())
    fail(ErrorKind::InvalidArgument, "adapter config has no \"peft_type\" string");
  const Tuner& tuner = tuner_for(input["peft_type"].get<std::string>());
  nlohmann::json config = tuner.resolve_for_model(tuner.normalize_config(input), *base_);
  const TiedModules ties = ensure_weight_tying(config, *base_);
  add_classification_head(config);
  tuner.prepare_model(config, *base_, !adapters_.empty());
  tuner.check_model(config, *base_);
  if (!adapters_.empty() && adapters_.begin()->second.tuner != &tuner)
    fail(ErrorKind::Unsupported, "this model carries " + adapters_.begin()->second.tuner->peft_type() +
                                     " adapters; adding a " + tuner.peft_type() + " adapter to it is not supported");
  {
    std::map<std::string, nlohmann::json> existing;
    for (const auto& [n, a] : adapters_) existing[n] = a.config;
    tuner.check_with_existing(config, existing);
  }
  std::map<std::string, at::Tensor> prepared;
  if (data) {
    for (const auto& batch : *data)
      if (!batch.input_ids.defined() || batch.input_ids.dim() != 2)
        fail(ErrorKind::InvalidArgument, "the data for adapter '" + name + "': every batch needs input_ids [batch, length]");
    config = tuner.prepare_from_data(config, *base_, *data, prepared);
  }

  // Modules inside existing adapter layers (their lora_A, base_layer, ...) are never targets themselves.
  std::vector<std::string> layer_paths;
  for (const auto& [path, layer] : adapter_layers()) layer_paths.push_back(path);
  std::vector<std::string> targets;
  const ModelLevelTuner* level = as_model_level(tuner);
  if (!level)
    for (const auto& key : find_target_modules(*base_, config, [&](const torch::nn::Module& m) { return tuner.can_wrap(m); }))
      if (!under_any(key, layer_paths) && !names_module(ties.targets_to_tie, key)) targets.push_back(key);
  // Modules tied to the input embedding get their adapter after every other target, from the embedding's (PEFT's
  // targets_to_tie), whatever target_modules says of them.
  std::vector<std::string> tied_targets;
  for (const auto& item : base_->named_modules("", false))
    if (names_module(ties.targets_to_tie, item.key()) && !under_any(item.key(), layer_paths) && tuner.can_wrap(*item.value()))
      tied_targets.push_back(item.key());
  if (!level && targets.empty() && !tuner.targets_beyond_modules(config))
    fail(ErrorKind::InvalidArgument, "target modules " + config["target_modules"].dump() + " not found in the base model (" +
                                         base_->model_type() + "); check target_modules");

  BaseWeights copies;
  if (tuner.changes_base_weights(config))
    for (const auto& key : targets)
      for (const auto& p : module_at(*base_, key)->parameters(true)) copies.emplace_back(p, p.detach().clone());

  Adapter entry{config, &tuner, {}};
  adapters_[name] = entry;
  order_.push_back(name);
  try {
    InjectContext ctx{name, config, "", state_, true, prepared, data};
    if (level) {
      // The first adapter decides PEFT's layout: prompt learning puts the base model at "base_model" itself.
      if (adapters_.size() == 1) use_layout(level->base_at_root());
      if (auto encoder = level->attach(*base_, name, config, state_, true)) {
        if (!prompt_encoders(*this)) register_module(kPromptEncoders, std::make_shared<AdapterDict>());
        prompt_encoders(*this)->put_module(name, encoder);
      }
    } else {
      tuner.prepare(*tuner_, *base_, targets, ctx);
    }
    std::vector<std::string> all_targets = targets;
    all_targets.insert(all_targets.end(), tied_targets.begin(), tied_targets.end());
    for (const auto& key : all_targets) {
      auto [parent, child] = parent_of(*base_, key);
      auto target = module_at(*base_, key);
      ctx.key = key;
      auto replacement = tuner.inject(target, ctx);
      if (replacement != target) parent->replace_module(child, replacement);
      adapters_[name].layers.push_back(key);
    }
    if (!tied_targets.empty()) {
      auto* embedding = dynamic_cast<AdapterLayer*>(module_at(*base_, input_embedding_path(*base_)).get());
      if (!embedding || !embedding->has_adapter(name))
        fail(ErrorKind::InvalidArgument, "ensure_weight_tying: the input embedding is not a target of adapter '" + name +
                                             "', so the modules tied to it have no adapter to share");
      for (const auto& key : tied_targets) {
        ctx.key = key;
        tuner.tie_to_input_embedding(dynamic_cast<AdapterLayer&>(*module_at(*base_, key)), *embedding, ctx);
      }
    }
    if (auto names = config_strings(config, "modules_to_save")) {
      std::vector<std::string> keys;
      for (const auto& item : base_->named_modules("", false))
        if (names_module(*names, item.key()) && !under_any(item.key(), layer_paths)) keys.push_back(item.key());
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
    if (!ties.modules_to_tie.empty()) tie_modules_to_save(name, ties.modules_to_tie);
    for (const auto& key : add_trainable_token_indices(*base_, name, config, state_)) adapters_[name].layers.push_back(key);
  } catch (...) {
    remove_adapter(name);
    restore(copies);
    throw;
  }
  if (changed) *changed = std::move(copies);
  if (state_->active.empty()) set_adapter(name);
}

// ensure_weight_tying with the embedding in modules_to_save: each tied module's copy is a Linear over the weight of
// the embedding's copy (PEFT's modules_to_tie; like PEFT, the Linear is first built, drawing its own init, then
// given that weight).
void PeftModel::tie_modules_to_save(const std::string& name, const std::vector<std::string>& tied) {
  auto* embedding = dynamic_cast<ModulesToSaveLayer*>(module_at(*base_, input_embedding_path(*base_)).get());
  if (!embedding || !embedding->has_adapter(name))
    fail(ErrorKind::InvalidArgument, "ensure_weight_tying: the input embedding is not in modules_to_save of adapter '" +
                                         name + "'");
  at::Tensor weight = embedding->copy(name)->named_parameters(false)["weight"];
  std::vector<std::string> keys;
  for (const auto& item : base_->named_modules("", false))
    for (const auto& t : tied)
      if (!item.key().empty() && item.key().size() >= t.size() &&
          item.key().compare(item.key().size() - t.size(), t.size(), t) == 0 &&
          dynamic_cast<torch::nn::LinearImpl*>(item.value().get()))
        keys.push_back(item.key());
  for (const auto& key : keys) {
    auto target = module_at(*base_, key);
    auto layer = std::make_shared<ModulesToSaveLayer>(target, state_);
    torch::nn::Linear drawn(torch::nn::LinearOptions(weight.size(0), weight.size(1)).bias(false));
    layer->add(name, std::make_shared<models::TiedLinearImpl>(weight));
    auto [parent, child] = parent_of(*base_, key);
    parent->replace_module(child, layer);
    adapters_[name].layers.push_back(key);
  }
}

void PeftModel::remove_adapter(const std::string& name) {
  auto entry = adapters_.find(name);
  if (entry != adapters_.end())
    if (const ModelLevelTuner* level = as_model_level(*entry->second.tuner)) level->detach(*base_, name, entry->second.config);
  if (AdapterDict* encoders = prompt_encoders(*this)) encoders->remove(name);
  for (const auto& [path, layer] : adapter_layers()) {
    // (a layer left without adapters by a failed add_adapter is unwrapped too)
    if (layer->has_adapter(name)) layer->delete_adapter(name);
    if (layer->empty()) put_back(*base_, path, layer->base_layer());
  }
  for (const auto& [path, dict] : model_level_dicts(*tuner_)) dict->remove(name);
  adapters_.erase(name);
  order_.erase(std::remove(order_.begin(), order_.end(), name), order_.end());
  auto& active = state_->active;
  active.erase(std::remove(active.begin(), active.end(), name), active.end());
  if (adapters_.empty()) use_layout(false);
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
  if (names.empty()) fail(ErrorKind::InvalidArgument, "set_active_adapters needs at least one adapter name");
  for (const auto& n : names) adapter(n);
  state_->active = names;
}

void PeftModel::set_disabled(bool disabled) { state_->disabled = disabled; }

// Every tensor of adapter `name`, found structurally as PEFT's _get_tuner_state_dict_key_prefixes does: everything
// on its layers except the wrapped module, restricted to this adapter's entries, plus learnable biases and, when an
// embedding is targeted, that embedding's base weight.
void PeftModel::set_trainable(const std::string& name) {
  adapter(name);
  for (auto& p : parameters(true)) p.set_requires_grad(false);
  for (auto& t : adapter_tensors(name))
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

void PeftModel::merge(const std::vector<std::string>& adapters) {
  std::vector<std::string> names = adapters.empty() ? state_->active : adapters;
  for (const auto& n : names)
    if (std::string why = adapter(n).tuner->merge_refusal(adapter(n).config); !why.empty())
      fail(ErrorKind::Unsupported, why);
  for (const auto& n : names)
    if (as_model_level(*adapter(n).tuner))
      fail(ErrorKind::Unsupported, adapter(n).tuner->peft_type() +
                                       " adapters cannot be merged into the base weights: they act on the model as a whole "
                                       "(virtual tokens, prefixes or terms inside attention), which no weight of the "
                                       "base model expresses");
  auto layers = adapter_layers();
  for (const auto& [path, layer] : layers)
    if (!dynamic_cast<ModulesToSaveLayer*>(layer) && !layer->can_merge()) fail(ErrorKind::Unsupported, layer->merge_refusal());
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
    put_back(*base_, path, keep);
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

// Reads the shared AdapterState only: forward_mixed sets and resets the row routing itself, so concurrent forwards
// (which the facade allows) write nothing shared.
models::ModelOutput PeftModel::forward(const models::ModelInputs& inputs) {
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
  // Also while disabled: what an adapter tracks over a KV cache then starts from the base model's forward.
  for (const auto& name : state_->active) {
    const Adapter& a = adapter(name);
    a.tuner->before_forward(name, a.config, inputs, at::Tensor(), *state_);
  }
  if (!state_->disabled)
    for (const auto& name : state_->active) {
      const Adapter& a = adapter(name);
      if (const ModelLevelTuner* level = as_model_level(*a.tuner)) {
        adapted = level->adapt_inputs(prompt_encoder(name), a.config, *base_, *use);
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

void PeftModel::before_training(int64_t max_steps) {
  auto layers = adapter_layers();
  for (const auto& name : state_->active) {
    Adapter& a = adapters_.at(name);
    a.tuner->before_training(layers, name, a.config, max_steps);
  }
}

std::optional<double> PeftModel::learning_rate(const std::string& parameter) const {
  for (const auto& name : state_->active) {
    const Adapter& a = adapter(name);
    if (auto rate = a.tuner->learning_rate(parameter, a.config)) return rate;
  }
  return std::nullopt;
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
  std::vector<std::string> unique;
  for (const auto& n : rows)
    if (n != "__base__" && std::find(unique.begin(), unique.end(), n) == unique.end()) unique.push_back(n);
  for (const auto& n : unique) {
    std::vector<int64_t> indices;
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i] == n) indices.push_back(static_cast<int64_t>(i));
    const Adapter& a = adapter(n);
    a.tuner->before_forward(n, a.config, inputs, at::tensor(indices, at::TensorOptions().dtype(at::kLong)), *state_);
  }
  state_->row_adapters = &rows;
  return base_->forward(inputs);
}

void PeftModel::add_weighted_adapter(const std::vector<std::string>& adapters, const std::vector<double>& weights,
                                     const std::string& name, const std::string& combination_type, int64_t svd_rank) {
  if (adapters.empty() || adapters.size() != weights.size())
    fail(ErrorKind::InvalidArgument, "add_weighted_adapter needs one weight per adapter (" + std::to_string(adapters.size()) +
                                         " adapters, " + std::to_string(weights.size()) + " weights)");
  const Tuner& tuner = *adapter(adapters.front()).tuner;
  for (const auto& n : adapters)
    if (adapter(n).tuner != &tuner)
      fail(ErrorKind::Unsupported, "add_weighted_adapter combines adapters of one method; '" + adapters.front() +
                                       "' is " + tuner.peft_type() + ", '" + n + "' is " + adapter(n).tuner->peft_type());
  tuner.add_weighted_adapter(*this, {adapters, weights, name, combination_type, svd_rank});
}

}  // namespace peft4j::tuners
