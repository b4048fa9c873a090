// Typed reads of PEFT config fields with errors that name the field, and the target-module matching every
// layer method shares (PEFT's check_target_module_exists).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// `field` of `config` as a type, or `fallback` when absent or null; a value of another type is
// Error(InvalidArgument) naming "<peft_type> config field '<field>'".
int64_t config_int(const nlohmann::json& config, const std::string& field, int64_t fallback);
double config_double(const nlohmann::json& config, const std::string& field, double fallback);
bool config_bool(const nlohmann::json& config, const std::string& field, bool fallback);
std::string config_string(const nlohmann::json& config, const std::string& field, const std::string& fallback);
// A list of strings, or nullopt when absent or null. A single string is returned as one element only when
// `allow_string` (otherwise it is an error).
std::optional<std::vector<std::string>> config_strings(const nlohmann::json& config, const std::string& field);

// Fills absent fields of `config` with `defaults` (PEFT's defaults for the method), keeping every other field.
nlohmann::json with_defaults(const nlohmann::json& config, const nlohmann::json& defaults);

// What PEFT's configs of module-wrapping methods require, errors naming "<peft_type> config field ...":
// target_modules given (peft4j does not fill PEFT's per-architecture defaults), and layers_pattern only together with
// layers_to_transform (PEFT's __post_init__).
void require_target_modules(const nlohmann::json& config);

// Module paths of the model (relative to it, e.g. "model.layers.0.self_attn.q_proj") that the config targets:
// target_modules (list: exact name or ".name" suffix; string: full regex match; "all-linear": every Linear and
// Conv1D except the output embedding), exclude_modules, layers_to_transform/layers_pattern, and never a module
// under modules_to_save. `wrappable` filters by module type.
std::vector<std::string> find_target_modules(models::Model& model, const nlohmann::json& config,
                                             const std::function<bool(const torch::nn::Module&)>& wrappable);

// PEFT's get_pattern_key: the key of rank_pattern/alpha_pattern that matches `module_key`, if any.
std::optional<std::string> pattern_key(const nlohmann::json& pattern, const std::string& module_key);

// The parent module of `path` inside `root` and the child's name; Error(NotFound) when absent.
std::pair<std::shared_ptr<torch::nn::Module>, std::string> parent_of(torch::nn::Module& root, const std::string& path);
std::shared_ptr<torch::nn::Module> module_at(torch::nn::Module& root, const std::string& path);

}  // namespace peft4j::tuners
