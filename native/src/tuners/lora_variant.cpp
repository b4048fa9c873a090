#include "peft4j/tuners/lora_variant.h"

#include "peft4j/error.h"
#include "peft4j/warnings.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"

namespace peft4j::tuners {

namespace {

std::vector<LoraVariantSpec>& registry() {
  static std::vector<LoraVariantSpec> specs;
  return specs;
}

// PEFT's _get_lora_subconfig: a sub-config given as an object becomes its dataclass, so absent fields take their
// defaults and fields the dataclass lacks are dropped (warned here).
nlohmann::json complete_sub_config(const std::string& field, const nlohmann::json& value, const nlohmann::json& defaults) {
  nlohmann::json out = defaults;
  std::vector<std::string> unknown;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (defaults.contains(it.key()))
      out[it.key()] = it.value();
    else
      unknown.push_back(it.key());
  }
  for (const auto& u : unknown)
    warn("LORA config field '" + field + "': unknown field '" + u + "' ignored (PEFT 0.21's sub-config has no such field)");
  return out;
}

}  // namespace

at::Tensor LoraVariant::delta_weight(const LoraLayer& layer, const std::string& adapter) const {
  return layer.plain_delta_weight(adapter);
}

bool register_lora_variant(LoraVariantSpec spec) {
  for (const auto& s : registry())
    if (s.field == spec.field) fail(ErrorKind::Internal, "LoRA variant '" + spec.field + "' is registered twice");
  registry().push_back(std::move(spec));
  return true;
}

const std::vector<LoraVariantSpec>& lora_variants() { return registry(); }

bool lora_field_is_set(const nlohmann::json& value) {
  return !(value.is_null() || (value.is_array() && value.empty()) || (value.is_boolean() && !value.get<bool>()));
}

void check_lora_variants(nlohmann::json& config) {
  std::vector<std::string> requested;
  if (config_bool(config, "use_dora")) requested.push_back("use_dora");
  for (const auto& spec : registry()) {
    if (!config.contains(spec.field))
      fail(ErrorKind::Internal, "LoRA variant field '" + spec.field + "' is missing from the LoRA defaults");
    nlohmann::json& value = config[spec.field];
    if (!spec.defaults.is_null() && !value.is_null()) {
      if (!value.is_object())
        fail(ErrorKind::InvalidArgument, "LORA config field '" + spec.field + "' must be an object (its sub-config) or "
                                         "null, got " + value.dump());
      value = complete_sub_config(spec.field, value, spec.defaults);
    }
    if (lora_field_is_set(value)) {
      spec.validate(config);
      requested.push_back(spec.field);
    }
  }
  if (requested.size() > 1) {
    std::string names;
    for (const auto& r : requested) names += (names.empty() ? "" : ", ") + r;
    fail(ErrorKind::Unsupported, "LORA config asks for several LoRA variants at once (" + names +
                                     "); PEFT 0.21 resolves one variant per adapter");
  }
}

const LoraVariantSpec* requested_lora_variant(const nlohmann::json& config) {
  for (const auto& spec : registry())
    if (config.contains(spec.field) && lora_field_is_set(config[spec.field])) return &spec;
  return nullptr;
}

}  // namespace peft4j::tuners
