// Typed reads of PEFT config fields with errors that name the field, and the target-module matching every
// layer method shares (PEFT's check_target_module_exists).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

// Reads of a normalised config. normalize_config fills every field of the method's defaults table (with_defaults),
// so the defaults table is the one place a default lives: a field read here that is absent is a peft4j bug
// (Error(Internal) naming it), and a value of another type, null included, is Error(InvalidArgument) naming
// "<peft_type> config field '<field>'".
int64_t config_int(const nlohmann::json& config, const std::string& field);
double config_double(const nlohmann::json& config, const std::string& field);
bool config_bool(const nlohmann::json& config, const std::string& field);
std::string config_string(const nlohmann::json& config, const std::string& field);
// Fields PEFT allows to be None (a seed, an optional size): nullopt for null.
std::optional<int64_t> config_optional_int(const nlohmann::json& config, const std::string& field);
// A list of strings, or nullopt when absent or null; a single string is returned as one element.
std::optional<std::vector<std::string>> config_strings(const nlohmann::json& config, const std::string& field);

// Checked reads for the rules many methods share, each error naming the field and the value:
// a positive integer; a probability in [0, 1) (or [0, 1] when `one_allowed`); one of `choices`.
int64_t config_positive_int(const nlohmann::json& config, const std::string& field);
double config_probability(const nlohmann::json& config, const std::string& field, bool one_allowed = false);
std::string config_choice(const nlohmann::json& config, const std::string& field,
                          const std::vector<std::string>& choices);
// A per-module pattern (rank_pattern, alpha_pattern, block_size_pattern, ...): null becomes {}, and it must be an
// object whose values are numbers, or positive integers when `positive_ints`.
void check_pattern(nlohmann::json& config, const std::string& field, bool positive_ints);
// The pattern's value for the module at `key` (PEFT's get_pattern_key), else the config's `field`.
int64_t pattern_int(const nlohmann::json& config, const std::string& pattern, const std::string& key,
                    const std::string& field);
double pattern_double(const nlohmann::json& config, const std::string& pattern, const std::string& key,
                      const std::string& field);

// Fills absent fields of `config` with `defaults` (PEFT's defaults for the method). A field the defaults do not name
// is unknown to the method: like PEFT's config loading, it is dropped with a warning naming it, except `peft_version`
// (which PEFT writes into every saved config) and the method's `extensions` (fields peft4j accepts beyond PEFT's,
// kept only when given).
nlohmann::json with_defaults(const nlohmann::json& config, const nlohmann::json& defaults,
                             const std::vector<std::string>& extensions = {});
// Fills absent fields of `config` with `values`, keeping every other field: a composed method's own defaults for one
// of its parts, before the part's method fills the rest.
nlohmann::json fill_absent(const nlohmann::json& config, const nlohmann::json& values);

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
