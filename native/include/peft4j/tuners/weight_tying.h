// Adapters on tied weights, as PEFT 0.21 ties them (tuners_utils' _check_tied_modules, LoRA's _add_*_to_tie and
// set_additional_trainable_modules). Under tie_word_embeddings an lm_head shares the input embedding's weight; when
// an adapter changes that embedding, LoraConfig.ensure_weight_tying makes the tied modules follow it:
// - modules_to_save names the embedding (or lm_head): the embedding's copy is trained, and each tied module's copy
//   is an nn.Linear holding that very weight (PEFT's modules_to_tie);
// - target_modules names it: LoRA adapts the embedding, and each tied Linear gets a LoRA layer whose lora_A/lora_B
//   are the embedding's lora_embedding_B/lora_embedding_A transposed, sharing their storage (target_modules_to_tie).
//   As in PEFT these are separate trainable tensors over one storage: each gets its own gradient and optimizer
//   state, and both updates land in the shared values.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// Path of the model's input embedding ("model.embed_tokens", "transformer.wte", ...).
std::string input_embedding_path(models::Model& model);

// Paths of the modules whose weight is the input embedding's own tensor (PEFT's
// _get_module_names_tied_with_embedding), none when the model's config sets tie_word_embeddings false.
std::vector<std::string> modules_tied_to_input_embedding(models::Model& model);

struct TiedModules {
  std::vector<std::string> modules_to_tie;  // copies that share the embedding copy's weight
  std::vector<std::string> targets_to_tie;  // layers whose adapter is the embedding's, transposed
};

// With ensure_weight_tying set (and a tied model), rewrites modules_to_save or target_modules as PEFT does (the
// embedding added, the tied modules removed; the saved config shows it) and returns what to tie. Idempotent, so a
// loaded config resolves to the same ties. Without it, nothing changes and nothing is tied.
TiedModules ensure_weight_tying(nlohmann::json& config, models::Model& model);

}  // namespace peft4j::tuners
