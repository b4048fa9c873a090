// Reading a model's config.json fields.
#pragma once

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

}  // namespace peft4j::models
