#include "peft4j/tuners/config.h"
#include "peft4j/tuners/module_names.h"

#include <algorithm>
#include <regex>
#include <set>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

namespace {

std::string where(const nlohmann::json& config, const std::string& field) {
  std::string type = config.is_object() && config.contains("peft_type") && config["peft_type"].is_string()
                         ? config["peft_type"].get<std::string>()
                         : std::string("adapter");
  return type + " config field '" + field + "'";
}

const nlohmann::json* present(const nlohmann::json& config, const std::string& field) {
  if (!config.is_object()) return nullptr;
  auto it = config.find(field);
  if (it == config.end() || it->is_null()) return nullptr;
  return &*it;
}

bool is_linear_like(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const models::Conv1DImpl*>(&m);
}


// PEFT finds the layer index as the first number after one path component (or after layers_pattern).
std::optional<int64_t> layer_index(const std::string& key, const std::optional<std::vector<std::string>>& patterns) {
  std::smatch m;
  if (!patterns || patterns->empty()) {
    static const std::regex any(R"(^.*?\.[^.]*\.(\d+)\.)");
    if (std::regex_search(key, m, any)) return std::stoll(m[1]);
    return std::nullopt;
  }
  for (const auto& pattern : *patterns) {
    std::regex re("^.*?\\." + pattern + "\\.(\\d+)\\.");
    if (std::regex_search(key, m, re)) return std::stoll(m[1]);
  }
  return std::nullopt;
}

bool full_match(const std::string& pattern, const std::string& key, const std::string& field) {
  try {
    return std::regex_match(key, std::regex(pattern));
  } catch (const std::regex_error& e) {
    fail(ErrorKind::InvalidArgument, field + " is not a valid regular expression: '" + pattern + "'");
  }
}

}  // namespace

namespace {

// The field's value; absent is a peft4j bug (the method's defaults table lacks it), null a wrong type.
const nlohmann::json& field_value(const nlohmann::json& config, const std::string& field) {
  if (!config.is_object() || !config.contains(field))
    fail(ErrorKind::Internal, where(config, field) + " was read but has no default (the method's defaults table lacks it)");
  return config[field];
}

bool is_whole(const nlohmann::json& v) {
  return v.is_number_integer() || (v.is_number_float() && v.get<double>() == static_cast<int64_t>(v.get<double>()));
}

int64_t as_int(const nlohmann::json& v, const nlohmann::json& config, const std::string& field) {
  if (!is_whole(v)) fail(ErrorKind::InvalidArgument, where(config, field) + " must be an integer, got " + v.dump());
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i)
    out += (i == 0 ? "" : i + 1 == items.size() ? " or " : ", ") + ("\"" + items[i] + "\"");
  return out;
}

}  // namespace

int64_t config_int(const nlohmann::json& config, const std::string& field) {
  return as_int(field_value(config, field), config, field);
}

double config_double(const nlohmann::json& config, const std::string& field) {
  const auto& v = field_value(config, field);
  if (!v.is_number()) fail(ErrorKind::InvalidArgument, where(config, field) + " must be a number, got " + v.dump());
  return v.get<double>();
}

bool config_bool(const nlohmann::json& config, const std::string& field) {
  const auto& v = field_value(config, field);
  if (!v.is_boolean()) fail(ErrorKind::InvalidArgument, where(config, field) + " must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string config_string(const nlohmann::json& config, const std::string& field) {
  const auto& v = field_value(config, field);
  if (!v.is_string()) fail(ErrorKind::InvalidArgument, where(config, field) + " must be a string, got " + v.dump());
  return v.get<std::string>();
}

std::optional<int64_t> config_optional_int(const nlohmann::json& config, const std::string& field) {
  const auto& v = field_value(config, field);
  if (v.is_null()) return std::nullopt;
  return as_int(v, config, field);
}

std::optional<std::vector<std::string>> config_strings(const nlohmann::json& config, const std::string& field) {
  const auto* v = present(config, field);
  if (!v) return std::nullopt;
  if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
  if (!v->is_array()) fail(ErrorKind::InvalidArgument, where(config, field) + " must be a list of strings, got " + v->dump());
  std::vector<std::string> out;
  for (const auto& item : *v) {
    if (!item.is_string())
      fail(ErrorKind::InvalidArgument, where(config, field) + " must be a list of strings, got " + v->dump());
    out.push_back(item.get<std::string>());
  }
  return out;
}

int64_t config_positive_int(const nlohmann::json& config, const std::string& field) {
  const auto& v = field_value(config, field);
  if (!is_whole(v) || as_int(v, config, field) <= 0)
    fail(ErrorKind::InvalidArgument, where(config, field) + " must be a positive integer, got " + v.dump());
  return as_int(v, config, field);
}

double config_probability(const nlohmann::json& config, const std::string& field, bool one_allowed) {
  const double p = config_double(config, field);
  if (p < 0 || p > 1 || (p == 1 && !one_allowed))
    fail(ErrorKind::InvalidArgument, where(config, field) + " must be in [0, " + (one_allowed ? "1]" : "1)") +
                                         ", got " + config[field].dump());
  return p;
}

std::string config_choice(const nlohmann::json& config, const std::string& field,
                          const std::vector<std::string>& choices) {
  const auto& v = field_value(config, field);
  if (!v.is_string() || std::find(choices.begin(), choices.end(), v.get<std::string>()) == choices.end())
    fail(ErrorKind::InvalidArgument, where(config, field) + " must be " + quoted_list(choices) + ", got " + v.dump());
  return v.get<std::string>();
}

void check_pattern(nlohmann::json& config, const std::string& field, bool positive_ints) {
  auto& p = config[field];
  if (p.is_null()) p = nlohmann::json::object();
  if (!p.is_object()) fail(ErrorKind::InvalidArgument, where(config, field) + " must be an object, got " + p.dump());
  for (auto it = p.begin(); it != p.end(); ++it) {
    const bool ok = positive_ints ? is_whole(it.value()) && it.value().get<double>() > 0 : it.value().is_number();
    if (!ok)
      fail(ErrorKind::InvalidArgument, where(config, field) + " entry '" + it.key() + "' must be " +
                                           (positive_ints ? "a positive integer" : "a number") + ", got " +
                                           it.value().dump());
  }
}

int64_t pattern_int(const nlohmann::json& config, const std::string& pattern, const std::string& key,
                    const std::string& field) {
  if (auto k = pattern_key(config[pattern], key)) return as_int(config[pattern][*k], config, pattern);
  return config_int(config, field);
}

double pattern_double(const nlohmann::json& config, const std::string& pattern, const std::string& key,
                      const std::string& field) {
  if (auto k = pattern_key(config[pattern], key)) return config[pattern][*k].get<double>();
  return config_double(config, field);
}

nlohmann::json with_defaults(const nlohmann::json& config, const nlohmann::json& defaults,
                             const std::vector<std::string>& extensions) {
  if (!config.is_object()) fail(ErrorKind::Format, "adapter config is not a JSON object");
  nlohmann::json out = defaults;
  std::vector<std::string> unknown;
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (defaults.contains(it.key()) || it.key() == "peft_version" ||
        std::find(extensions.begin(), extensions.end(), it.key()) != extensions.end())
      out[it.key()] = it.value();
    else
      unknown.push_back(it.key());
  }
  if (!unknown.empty()) {
    std::string names;
    for (const auto& u : unknown) names += (names.empty() ? "'" : ", '") + u + "'";
    warn(defaults.value("peft_type", std::string("adapter")) + " config: unknown field" +
         (unknown.size() == 1 ? " " : "s ") + names + " ignored (PEFT 0.21's config for the method has no such field)");
  }
  return out;
}

nlohmann::json fill_absent(const nlohmann::json& config, const nlohmann::json& values) {
  if (!config.is_object()) fail(ErrorKind::Format, "adapter config is not a JSON object");
  nlohmann::json out = config;
  for (auto it = values.begin(); it != values.end(); ++it)
    if (!out.contains(it.key())) out[it.key()] = it.value();
  return out;
}

void require_target_modules(const nlohmann::json& config) {
  const std::string type = config.value("peft_type", std::string("adapter"));
  auto unset = [&](const char* field) {  // Python's falsiness, as PEFT tests it
    auto it = config.find(field);
    return it == config.end() || it->is_null() || (it->is_array() && it->empty()) ||
           (it->is_string() && it->get<std::string>().empty());
  };
  if (!unset("layers_pattern") && unset("layers_to_transform"))
    fail(ErrorKind::InvalidArgument,
         type + " config field 'layers_pattern' needs 'layers_to_transform' (which layer indices to adapt)");
  if (!config.contains("target_modules") || config["target_modules"].is_null())
    fail(ErrorKind::InvalidArgument, type + " config field 'target_modules' is required (a list of module names, a "
                                            "regular expression, or \"all-linear\" for methods that wrap linear layers); "
                                            "peft4j does not fill PEFT's per-architecture defaults");
}

std::optional<std::string> pattern_key(const nlohmann::json& pattern, const std::string& module_key) {
  if (!pattern.is_object()) return std::nullopt;
  for (auto it = pattern.begin(); it != pattern.end(); ++it) {
    std::regex re("(.*\\.)?(" + it.key() + ")$");
    if (std::regex_match(module_key, re)) return it.key();
  }
  return std::nullopt;
}

std::vector<std::string> find_target_modules(models::Model& model, const nlohmann::json& config,
                                             const std::function<bool(const torch::nn::Module&)>& wrappable) {
  const nlohmann::json* targets = present(config, "target_modules");
  if (!targets) fail(ErrorKind::InvalidArgument, where(config, "target_modules") + " is required");
  auto modules_to_save = config_strings(config, "modules_to_save");
  auto layers_pattern = config_strings(config, "layers_pattern");
  std::optional<std::set<int64_t>> layers;
  if (const auto* l = present(config, "layers_to_transform")) {
    layers.emplace();
    if (l->is_number_integer()) {
      layers->insert(l->get<int64_t>());
    } else if (l->is_array()) {
      for (const auto& i : *l) {
        if (!i.is_number_integer())
          fail(ErrorKind::InvalidArgument, where(config, "layers_to_transform") + " must be integers, got " + l->dump());
        layers->insert(i.get<int64_t>());
      }
      if (layers->empty()) layers.reset();
    } else {
      fail(ErrorKind::InvalidArgument, where(config, "layers_to_transform") + " must be an integer or a list");
    }
  }

  const bool regex_targets = targets->is_string();
  std::string target_regex = regex_targets ? targets->get<std::string>() : "";
  bool all_linear = false;
  std::vector<std::string> target_names;
  if (regex_targets) {
    std::string lower = target_regex;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    all_linear = lower == "all-linear";
  } else {
    target_names = *config_strings(config, "target_modules");
  }
  std::string output_embedding;
  if (all_linear) {
    // PEFT leaves the output layer out of all-linear.
    for (const auto& item : model.named_modules("", false))
      if (item.key() == "lm_head") output_embedding = "lm_head";
  }

  std::vector<std::string> found;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& key = item.key();
    // exclude_modules: a regex string or a list of names
    if (const auto* ex = present(config, "exclude_modules")) {
      bool excluded = false;
      if (ex->is_string()) {
        excluded = full_match(ex->get<std::string>(), key, where(config, "exclude_modules"));
      } else {
        const auto names = config_strings(config, "exclude_modules");
        excluded = names_module(*names, key);
      }
      if (excluded) continue;
    }
    if (modules_to_save) {
      bool under = false;
      for (const auto& m : *modules_to_save)
        if (names_module_pattern(m, key)) under = true;
      if (under) continue;
    }
    bool hit;
    if (all_linear) {
      hit = is_linear_like(*item.value()) && key != output_embedding;
    } else if (regex_targets) {
      hit = full_match(target_regex, key, where(config, "target_modules"));
    } else {
      hit = std::count(target_names.begin(), target_names.end(), key) > 0;
      if (!hit) {
        hit = names_module(target_names, key);
        if (hit && layers) {
          auto index = layer_index(key, layers_pattern);
          hit = index && layers->count(*index);
        }
      }
    }
    if (hit && wrappable(*item.value())) found.push_back(key);
  }
  return found;
}

std::shared_ptr<torch::nn::Module> module_at(torch::nn::Module& root, const std::string& path) {
  auto modules = root.named_modules("", false);
  auto* m = modules.find(path);
  if (!m) fail(ErrorKind::NotFound, "no module '" + path + "' in the model");
  return *m;
}

std::pair<std::shared_ptr<torch::nn::Module>, std::string> parent_of(torch::nn::Module& root, const std::string& path) {
  auto dot = path.rfind('.');
  if (dot == std::string::npos) {
    // The root's own child: hand back a non-owning pointer to the root.
    return {std::shared_ptr<torch::nn::Module>(&root, [](torch::nn::Module*) {}), path};
  }
  return {module_at(root, path.substr(0, dot)), path.substr(dot + 1)};
}

bool names_module(const std::vector<std::string>& names, const std::string& path) {
  return std::any_of(names.begin(), names.end(), [&](const std::string& n) {
    return path == n || (path.size() > n.size() && path.compare(path.size() - n.size() - 1, n.size() + 1, "." + n) == 0);
  });
}

bool names_module_pattern(const std::string& pattern, const std::string& path) {
  return std::regex_match(path, std::regex("(^|.*\\.)" + pattern + "($|\\..*)"));
}

}  // namespace peft4j::tuners
