// The cases the tuner contract runs, and the rule that every registered method has one: the golden cases of HF
// PEFT's methods (python-parity/golden, made by HF PEFT) and the cases the project generates itself on tiny models
// (adapter_family_testing.h) for every method outside the frozen golden set.
#pragma once

#include <dirent.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft4j/files.h"
#include "peft4j/tuners/tuner.h"

namespace contract_cases {

inline const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

struct GoldenCase {
  std::string name;
  std::string method;
  std::string base;  // model directory
};

// Golden single-adapter cases of registered methods (one per method and architecture).
inline std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> out;
  DIR* d = ::opendir((kGolden + "/cases").c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.push_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  auto registered = peft4j::tuners::registered_tuners();
  for (const auto& name : names) {
    std::string folder = kGolden + "/cases/" + name;
    if (!peft4j::io::is_regular_file(folder + "/case.json")) continue;
    auto spec = peft4j::io::read_json_file(folder + "/case.json");
    std::string method = spec.value("method", "");
    if (!spec.contains("adapter") || !std::count(registered.begin(), registered.end(), method)) continue;
    out.push_back({name, method, folder + "/" + spec["base_model"].get<std::string>()});
  }
  return out;
}

struct GeneratedCase {
  std::string name;
  std::string family;
  nlohmann::json config;
  bool identity_init = true;  // false: the method has no identity initialisation (MAM's and UniPELT's prefixes)
};

// Cases on tiny models the tests build (adapter_family_testing.h), for the methods without golden cases: a new method
// adds its rows here unless HF PEFT made a golden case for it.
inline std::vector<GeneratedCase> generated_cases() {
  nlohmann::json houlsby = {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"reduction_factor", 4}, {"non_linearity", "swish"}};
  nlohmann::json scaled_parallel = {{"peft_type", "BOTTLENECK"}, {"is_parallel", true}, {"reduction_factor", 2}, {"scaling", "learned"}};
  nlohmann::json compacter = {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"reduction_factor", 4}, {"phm_layer", true}};
  nlohmann::json mam = {{"peft_type", "MAM"}, {"prefix_tuning", {{"num_virtual_tokens", 4}, {"encoder_hidden_size", 16}}}};
  nlohmann::json unipelt = {{"peft_type", "UNIPELT"},
                            {"prefix_tuning", {{"num_virtual_tokens", 4}, {"encoder_hidden_size", 16}}},
                            {"adapter", {{"reduction_factor", 4}}}, {"lora", {{"r", 4}}}};
  return {{"houlsby_llama", "llama", houlsby},
          {"pfeiffer_gpt2", "gpt2", {{"peft_type", "BOTTLENECK"}, {"reduction_factor", 4}}},
          {"scaled_parallel_llama", "llama", scaled_parallel},
          {"adapter_drop_llama", "llama", {{"peft_type", "BOTTLENECK"}, {"leave_out", {0}}, {"adapter_drop", true}}},
          {"compacter_llama", "llama", compacter},
          {"adapter_bias_gpt2", "gpt2", {{"peft_type", "ADAPTER_BIAS"}}},
          {"bitfit_gpt2", "gpt2", {{"peft_type", "BITFIT"}}},
          {"layer_freezing_llama", "llama", {{"peft_type", "LAYER_FREEZING"}, {"num_trainable_layers", 1}}},
          {"mam_llama", "llama", mam, false},
          {"unipelt_llama", "llama", unipelt, false},
          {"mh_parallel_adapter_gpt2", "gpt2", {{"peft_type", "MH_PARALLEL_ADAPTER"}, {"bottleneck_size", 4}}},
          // HF PEFT's weight tuners without golden cases (their live rows are in python-parity/table.py)
          // PVeRA samples its latent in training with noise of about unit scale: at the default d_initial 0.1 the mean
          // is a tenth of it and 20 steps do not lower the loss; at 1.0 they do
          {"pvera_llama", "llama",
           {{"peft_type", "PVERA"}, {"r", 8}, {"d_initial", 1.0}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"deft_gpt2", "gpt2", {{"peft_type", "DEFT"}, {"r", 4}, {"target_modules", {"c_attn", "c_fc"}}}},
          {"glora_llama", "llama", {{"peft_type", "GLORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}}};
}

// The peft_types the cases above run.
inline std::set<std::string> covered_methods() {
  std::set<std::string> out;
  for (const auto& c : golden_cases()) out.insert(c.method);
  for (const auto& c : generated_cases()) out.insert(c.config["peft_type"].get<std::string>());
  return out;
}

}  // namespace contract_cases
