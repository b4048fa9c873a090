// PEFT raises for a targeted module its method cannot wrap (a TypeError in _create_new_module) rather than skipping
// it; peft4j refuses such a config before any work, naming the module.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

class Tuner;

// Error(Unsupported) "<peft_type> cannot wrap target module '<key>' (<module>): it wraps <supported> only" for the
// first module the config targets that `tuner` cannot wrap. Modules inside existing adapter layers are never targets;
// an adapter layer itself passes (PeftModel decides whether another adapter may join it).
void require_wrappable_targets(const Tuner& tuner, const nlohmann::json& config, models::Model& model,
                               const std::string& supported);

}  // namespace peft4j::tuners
