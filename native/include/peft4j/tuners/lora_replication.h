// LoRA's layer_replication (PEFT 0.21): before the adapter's targets are matched, the base model's layer stack is
// rebuilt from a layer map [[start, end), ...] whose repeated layers share their weights (models/layer_replication.h),
// so that each copy carries its own adapter (e.g. a deeper model grown from a smaller one). Llama-family and BERT
// models; adapters on replicated layers do not merge (copies share the weight their deltas would go into), as PEFT
// intends (its own check never fires: it looks the field up among the adapter names).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// Checks the field: null or a list of [start, end] integer pairs.
void check_layer_replication(const nlohmann::json& config);
// Replicates the layers when the config asks for it; refused on a model that already carries adapters.
void apply_layer_replication(const nlohmann::json& config, models::Model& model, bool has_adapters);
// Why an adapter of this config cannot merge ("" when it can).
std::string layer_replication_merge_refusal(const nlohmann::json& config);

}  // namespace peft4j::tuners
