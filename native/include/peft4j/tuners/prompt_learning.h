// What PEFT's prompt-learning methods share (PromptLearningConfig, PeftModel's prompt_encoder, get_prompt): a
// prompt encoder per adapter turns virtual-token indices into a table of num_virtual_tokens x
// num_transformer_submodules rows; the adapted forward prepends those rows to the input embeddings (prompt tuning,
// P-tuning) or feeds them to every attention layer as past keys/values (prefix tuning, which overrides
// adapt_inputs). PEFT saves the table as "prompt_embeddings" and, in inference mode, the encoder is that table.
#pragma once

#include "peft4j/tuners/model_level.h"

namespace peft4j::tuners {

class PromptLearningTuner : public ModelLevelTuner {
 public:
  bool base_at_root() const override { return true; }
  // PEFT's _prepare_prompt_learning_config: num_layers, token_dim, num_attention_heads from the model config,
  // num_transformer_submodules 2 for seq2seq, 1 otherwise, where the config leaves them null.
  nlohmann::json resolve_for_model(const nlohmann::json& config, models::Model& model) const override;
  void check_model(const nlohmann::json& config, models::Model& model) const override;
  std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                            const nlohmann::json& config, const std::shared_ptr<AdapterState>& state,
                                            bool initialise) const override;
  std::vector<std::pair<std::string, at::Tensor>> encoder_checkpoint(torch::nn::Module& encoder,
                                                                     const nlohmann::json& config) const override;
  std::vector<std::pair<std::string, std::string>> encoder_checkpoint_targets(
      const nlohmann::json& config) const override;
  nlohmann::json config_for_load(const nlohmann::json& saved) const override;
  models::ModelInputs adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config, models::Model& model,
                                   const models::ModelInputs& inputs) const override;

  // The method's prompt encoder for `config` (after resolve_for_model), initialised unless `initialise` is false.
  virtual std::shared_ptr<torch::nn::Module> build_encoder(models::Model& model, const nlohmann::json& config,
                                                           bool initialise) const = 0;
  // The encoder's output for every virtual token, [rows, width] (PEFT's prompt_encoder(prompt_tokens) for one row;
  // in inference mode the embedding table itself).
  virtual at::Tensor virtual_tokens(torch::nn::Module& encoder, const nlohmann::json& config) const = 0;

 protected:
  // PEFT's PromptLearningConfig fields with their defaults, for a method's own defaults to extend.
  static nlohmann::json common_defaults(const std::string& peft_type);
  // Checks the fields every prompt-learning config shares (num_virtual_tokens > 0, ...).
  static void check_common(const nlohmann::json& config);
};

// num_virtual_tokens and num_virtual_tokens x num_transformer_submodules of a resolved config.
int64_t num_virtual_tokens(const nlohmann::json& config);
int64_t total_virtual_tokens(const nlohmann::json& config);

// A torch::nn::Embedding [rows, width] registered as "embedding", initialised N(0, 1) as torch does.
std::shared_ptr<torch::nn::Module> embedding_encoder(int64_t rows, int64_t width);
// The "embedding" weight of an encoder.
at::Tensor encoder_embedding(torch::nn::Module& encoder);

}  // namespace peft4j::tuners
