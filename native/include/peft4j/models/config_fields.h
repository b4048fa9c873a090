// Reading a model's config.json fields.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/error.h"

namespace peft4j::models {

// A config.json value: `fallback` when absent or null, Error(Format) naming the model type and field when of the
// wrong type.
template <typename T>
T config_value(const nlohmann::json& config, const std::string& model_type, const char* key, T fallback) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(ErrorKind::Format, model_type + " config field '" + key + "' has the wrong type: " + it->dump());
  }
}

// The classes of a sequence-classification head, as transformers' PretrainedConfig counts them: the entries of
// id2label, else num_labels, else 2.
inline int64_t num_labels(const nlohmann::json& config, const std::string& model_type) {
  auto id2label = config.find("id2label");
  if (id2label == config.end() || id2label->is_null()) return config_value<int64_t>(config, model_type, "num_labels", 2);
  if (!id2label->is_object()) fail(ErrorKind::Format, model_type + " config field 'id2label' is not an object");
  return static_cast<int64_t>(id2label->size());
}

// The longest sequence the model's position embeddings cover (n_positions, else max_position_embeddings); 0 when
// the config names neither (relative positions, as T5's).
inline int64_t max_positions(const nlohmann::json& config, const std::string& model_type) {
  return config_value<int64_t>(config, model_type, "n_positions",
                               config_value<int64_t>(config, model_type, "max_position_embeddings", 0));
}

}  // namespace peft4j::models
