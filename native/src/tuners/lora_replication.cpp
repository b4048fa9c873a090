// layer_replication as PEFT 0.21's LoraModel._prepare_model and tuners_utils.replicate_layers.
#include "peft4j/tuners/lora_replication.h"

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/models/layer_replication.h"

namespace peft4j::tuners {

namespace {

bool asked(const nlohmann::json& config) {
  const auto& v = config["layer_replication"];
  return v.is_array() && !v.empty();
}

}  // namespace

void check_layer_replication(const nlohmann::json& config) {
  const auto& v = config["layer_replication"];
  if (v.is_null()) return;
  bool ok = v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& pair) {
    return pair.is_array() && pair.size() == 2 && pair[0].is_number_integer() && pair[1].is_number_integer();
  });
  if (!ok)
    fail(ErrorKind::InvalidArgument, "LORA config field 'layer_replication' must be a list of [start, end] layer index "
                                     "pairs, got " + v.dump());
}

void apply_layer_replication(const nlohmann::json& config, models::Model& model, bool has_adapters) {
  if (!asked(config)) return;
  if (has_adapters)
    fail(ErrorKind::Unsupported, "LORA config field 'layer_replication' on a model that already carries adapters is not "
                                 "supported by peft4j (the stack would be replicated again, adapters included)");
  models::LayerMap map;
  for (const auto& pair : config["layer_replication"]) map.emplace_back(pair[0].get<int64_t>(), pair[1].get<int64_t>());
  model.replicate_layers(map);
}

std::string layer_replication_merge_refusal(const nlohmann::json& config) {
  if (!asked(config)) return "";
  return "Cannot merge LORA layers when base model layers are replicated (layer_replication): the copies of a layer "
         "share the base weight their adapters would be merged into";
}

}  // namespace peft4j::tuners
