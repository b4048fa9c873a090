// PEFT's PeftModel: a base model with named adapters injected into it. Module names follow PEFT's layout
// (the base model sits at "base_model.model"), so parameter names equal PEFT's named_parameters() and saved
// adapters use PEFT's keys ("base_model.model.<module>.lora_A.weight", adapter name removed).
// peft_model.cpp holds the lifecycle (inject, activate, disable, delete, forward, merge); adapter_checkpoint.cpp the
// PEFT-format files (which tensors an adapter has, their keys, save and load).
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class PeftModel : public models::Model {
 public:
  explicit PeftModel(std::shared_ptr<models::Model> base);

  // Adds adapter `name` from a PEFT config (any registered peft_type): finds the targets, wraps them and
  // initialises the adapter as the config says. The new adapter becomes active and trainable when it is the only
  // one. Nothing changes when the config or the targets are wrong. `data`: batches (as the trainer collates them) the
  // base model runs over before the adapter is built, for methods that start from what it finds: LoRA's CorDA, EVA and
  // LoRA-GA (Tuner::prepare_from_data), PaFi's Fisher mask (InjectContext::data). Empty: none.
  void add_adapter(const std::string& name, const nlohmann::json& config,
                   const std::vector<models::ModelInputs>& data = {});
  // Loads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors). Every key must map onto the
  // model and every adapter tensor must be present with the right shape; otherwise Error and the model is as before.
  void load_adapter(const std::string& dir, const std::string& name, bool trainable = false);
  // Writes adapter `name` in PEFT's format into `dir` (created if missing), each file atomically.
  void save_adapter(const std::string& dir, const std::string& name) const;

  void set_adapter(const std::string& name);               // the only active adapter; it becomes trainable
  void set_active_adapters(const std::vector<std::string>& names);
  void delete_adapter(const std::string& name);
  void set_disabled(bool disabled);                        // the base model alone while true
  bool disabled() const { return state_->disabled; }
  std::vector<std::string> adapter_names() const;
  const std::vector<std::string>& active_adapters() const { return state_->active; }
  const nlohmann::json& adapter_config(const std::string& name) const;

  // Marks adapter `name`'s tensors trainable and every other tensor frozen (PEFT's is_trainable).
  void set_trainable(const std::string& name);
  // Trainable tensors by PEFT's parameter name, in module order.
  std::vector<std::pair<std::string, at::Tensor>> trainable_parameters() const;
  int64_t trainable_parameter_count() const;

  // Folds the given (default: active) adapters into the base weights, and back.
  void merge(const std::vector<std::string>& adapters = {});
  void unmerge();
  // Merges the active adapters, removes every adapter layer and returns the plain base model.
  std::shared_ptr<models::Model> merge_and_unload();

  // PEFT's add_weighted_adapter: a new adapter from existing adapters of one method, combined as that method does
  // (Tuner::add_weighted_adapter; LoRA: combination_type "linear", "cat" or "svd").
  void add_weighted_adapter(const std::vector<std::string>& adapters, const std::vector<double>& weights,
                            const std::string& name, const std::string& combination_type, int64_t svd_rank = 0);

  // Training hooks: the active adapters' methods act after each optimizer step (AdaLoRA's rank allocation) and once
  // before a run of `max_steps` steps (Tuner::before_training).
  void after_optimizer_step(int64_t step);
  void before_training(int64_t max_steps);
  // A trainable tensor's own learning rate where its method sets one (Tuner::learning_rate), by parameter name.
  std::optional<double> learning_rate(const std::string& parameter) const;

  // The adapter's tensors keyed as PEFT saves them.
  io::TensorMap adapter_state_dict(const std::string& name) const;

  // A batch where row i uses adapter row_adapters[i] ("__base__" = none).
  models::ModelOutput forward_mixed(const models::ModelInputs& inputs, const std::vector<std::string>& row_adapters);

  models::Model& base_model() const { return *base_; }
  // The adapter layers inside the base model, by module path, in module order.
  NamedLayers adapter_layers() const;

  // The child that holds prompt-learning encoders (PEFT's prompt_encoder ModuleDict).
  static constexpr const char* kPromptEncoders = "prompt_encoder";

  // models::Model: the adapted model behaves as the base model does.
  models::ModelOutput forward(const models::ModelInputs& inputs) override;
  models::Task task() const override { return base_->task(); }
  const nlohmann::json& config() const override { return base_->config(); }
  std::string model_type() const override { return base_->model_type(); }
  torch::nn::Module& input_embeddings() override { return base_->input_embeddings(); }
  at::Tensor embed(const at::Tensor& input_ids) override { return base_->embed(input_ids); }
  int64_t num_layers() const override { return base_->num_layers(); }
  int64_t num_kv_heads() const override { return base_->num_kv_heads(); }
  int64_t head_dim() const override { return base_->head_dim(); }
  int64_t hidden_size() const override { return base_->hidden_size(); }
  int64_t vocab_size() const override { return base_->vocab_size(); }
  // False while an active adapter's method cannot work with a KV cache (Tuner::supports_kv_cache); forward() then
  // refuses use_cache.
  bool supports_kv_cache() const override;

 private:
  struct Adapter {
    nlohmann::json config;
    const Tuner* tuner;
    std::vector<std::string> layers;   // module paths (relative to the base model) holding this adapter
  };
  // One tensor of an adapter: where it lives in the model and how PEFT's file names it.
  struct AdapterTensor {
    std::string model_key;       // PEFT's named_parameters() name
    std::string checkpoint_key;  // PEFT's adapter_model.safetensors name
    at::Tensor tensor;
    bool trainable;              // saved embedding base weights are not trained
    bool required;               // must be present when loading
  };
  // Every tensor of adapter `name`, found structurally as PEFT's _get_tuner_state_dict_key_prefixes does.
  std::vector<AdapterTensor> adapter_tensors(const std::string& name) const;
  torch::nn::Module* prompt_encoder(const std::string& adapter) const;  // nullptr when the adapter has none
  // Whether the base model sits at "base_model" itself (prompt learning's layout) rather than at "base_model.model".
  bool base_at_root() const;
  void use_layout(bool at_root);
  void check_name(const std::string& name) const;
  const Adapter& adapter(const std::string& name) const;
  void remove_adapter(const std::string& name);
  void tie_modules_to_save(const std::string& name, const std::vector<std::string>& tied);
  // The base parameters an adapter changes in place (Tuner::changes_base_weights), with copies to put back.
  using BaseWeights = std::vector<std::pair<at::Tensor, at::Tensor>>;
  // add_adapter's work; `changed` (when given) receives the copies of the base parameters the adapter changed.
  void add_adapter(const std::string& name, const nlohmann::json& config, const std::vector<models::ModelInputs>* data,
                   BaseWeights* changed);
  static void restore(const BaseWeights& changed);

  std::shared_ptr<models::Model> base_;
  std::shared_ptr<torch::nn::Module> tuner_;  // "base_model", PEFT's LoraModel, holding the base as "model"
  std::shared_ptr<AdapterState> state_;
  std::map<std::string, Adapter> adapters_;
  std::vector<std::string> order_;
};

// Reads and validates an adapter directory's config (peft_type known, fields well-typed).
nlohmann::json read_adapter_config(const std::string& dir);

}  // namespace peft4j::tuners
