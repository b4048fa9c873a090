// Configs made of other methods' configs (MAM, UniPELT): each part is nested under its own field with its own
// method's field names, and is normalised, resolved and checked by that method's tuner.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/error.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// The part under `field` as its own method's config (with `peft_type`).
nlohmann::json config_part(const nlohmann::json& config, const std::string& field, const std::string& peft_type);

// A part's config as the composed config stores it: without the peft_type and the fields the composed config itself
// holds (task_type, base_model_name_or_path, revision, modules_to_save).
nlohmann::json stored_part(nlohmann::json part);

// Runs `f`; an Error from the part's tuner is rethrown naming "<peft_type> config field '<field>'".
template <typename F>
auto in_config_part(const std::string& peft_type, const std::string& field, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    fail(e.kind(), peft_type + " config field '" + field + "': " + e.what());
  }
}

// Adds context.adapter with `tuner` (a part's, context.config its config) to each of `targets` (module paths in
// `model`), replacing each module with the layer the tuner returns. Returns those layers in order.
std::vector<std::shared_ptr<torch::nn::Module>> inject_part(models::Model& model, const Tuner& tuner,
                                                            const std::vector<std::string>& targets,
                                                            InjectContext context);

}  // namespace peft4j::tuners
