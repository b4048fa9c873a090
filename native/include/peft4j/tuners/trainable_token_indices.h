// LoRA's trainable_token_indices, as PEFT 0.21 adds them beside the adapter (set_additional_trainable_modules): rows
// of an embedding (the input embedding for a list, the named modules for a {name: indices} dict) trained as
// TRAINABLE_TOKENS does, inside PEFT's TrainableTokensWrapper ("<module>.token_adapter", saved as
// "<module>.token_adapter.trainable_tokens_delta"). Under tie_word_embeddings the tied modules (an lm_head) follow
// the input embedding's rows and are not saved; ensure_weight_tying makes mismatched indices on tied modules an error.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/tuners/trainable_tokens.h"

namespace peft4j::tuners {

// PEFT's TrainableTokensWrapper: the module's trainable tokens live in its child "token_adapter".
class TrainableTokensWrapper : public torch::nn::Module, public models::TensorModule {
 public:
  explicit TrainableTokensWrapper(std::shared_ptr<TrainableTokensLayer> token_adapter);
  at::Tensor forward(const at::Tensor& x) override;
  TrainableTokensLayer& token_adapter() const { return *token_adapter_; }

 private:
  std::shared_ptr<TrainableTokensLayer> token_adapter_;
};

// Error(InvalidArgument) naming the field unless trainable_token_indices is null, a list of token ids or an object
// mapping module names to such lists.
void check_trainable_token_indices(const nlohmann::json& config);

// Adds adapter `adapter`'s trainable tokens to `model` when its config sets trainable_token_indices; returns the
// paths of the layers it added them to.
std::vector<std::string> add_trainable_token_indices(models::Model& model, const std::string& adapter,
                                                     const nlohmann::json& config,
                                                     const std::shared_ptr<AdapterState>& state);

}  // namespace peft4j::tuners
