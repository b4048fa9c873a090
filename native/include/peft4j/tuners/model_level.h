// Methods that act on the model as a whole instead of wrapping target modules one by one: PEFT's prompt learning
// (prompt tuning, P-tuning, prefix tuning: virtual tokens in front of the inputs or in every attention layer's
// keys/values) and adaption prompt (gated prompts inside the top attention layers). PeftModel attaches them
// through these hooks rather than through inject(); they cannot be merged into the base weights.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class ModelLevelTuner : public Tuner {
 public:
  bool can_wrap(const torch::nn::Module&) const override { return false; }
  // Never called for these methods: PeftModel uses attach() instead.
  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& context) const override;

  // PEFT's module layout: true when the base model sits at "base_model" itself (PeftModel's prompt encoders beside
  // it), false when a tuner model holds it as "base_model.model" (adaption prompt).
  virtual bool base_at_root() const = 0;

  // Adds adapter `adapter` to `model`. Returns the module PeftModel registers as "prompt_encoder.<adapter>" (PEFT's
  // prompt_encoder ModuleDict), or nullptr when the method keeps its tensors inside the model. `initialise` false
  // when the weights are loaded right after.
  virtual std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                                    const nlohmann::json& config,
                                                    const std::shared_ptr<AdapterState>& state,
                                                    bool initialise) const = 0;
  // Removes what attach() put into `model` (the prompt encoder itself is dropped by PeftModel).
  virtual void detach(models::Model& model, const std::string& adapter, const nlohmann::json& config) const {}
  // Tensors of the adapter held inside the model, by module path relative to the base model ("model.layers.1.
  // self_attn.adaption_prompt"); their checkpoint keys are PEFT's parameter names.
  virtual std::vector<std::pair<std::string, at::Tensor>> model_tensors(models::Model& model, const std::string& adapter,
                                                                        const nlohmann::json& config) const {
    return {};
  }
  // What PEFT saves for the prompt encoder: {"prompt_embeddings": the virtual tokens' table}; empty for methods
  // without one.
  virtual std::vector<std::pair<std::string, at::Tensor>> encoder_checkpoint(torch::nn::Module& encoder,
                                                                             const nlohmann::json& config) const {
    return {};
  }
  // The encoder tensor each checkpoint key of encoder_checkpoint() loads into (inference-mode encoders hold the table
  // itself), by the encoder's parameter name.
  virtual std::vector<std::pair<std::string, std::string>> encoder_checkpoint_targets(const nlohmann::json& config) const {
    return {};
  }
  // The config an adapter directory's config becomes when loaded (prompt learning: inference mode, as PEFT loads an
  // adapter that is not trainable: the saved table replaces any reparameterisation).
  virtual nlohmann::json config_for_load(const nlohmann::json& saved) const { return saved; }
  // The base model's inputs for one adapted forward (virtual tokens prepended, prefixes as past keys/values); the
  // inputs unchanged for methods that act inside the model.
  virtual models::ModelInputs adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config,
                                           models::Model& model, const models::ModelInputs& inputs) const {
    return inputs;
  }
};

// The tuner as a ModelLevelTuner, or nullptr for a method that wraps modules.
const ModelLevelTuner* as_model_level(const Tuner& tuner);

}  // namespace peft4j::tuners
