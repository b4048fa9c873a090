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
  nlohmann::json gralora = {{"peft_type", "GRALORA"}, {"r", 8}, {"hybrid_r", 2}, {"fan_in_fan_out", true},
                            {"target_modules", {"c_attn", "c_fc"}}};
  nlohmann::json tinylora = {{"peft_type", "TINYLORA"}, {"r", 2}, {"u", 16}, {"weight_tying", 0.5},
                             {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  nlohmann::json unilora = {{"peft_type", "UNILORA"}, {"r", 4}, {"theta_d_length", 128}, {"fan_in_fan_out", true},
                            {"target_modules", {"c_attn", "c_proj"}}};
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
          {"pafi_llama", "llama", {{"peft_type", "PAFI"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}, {"k", 512}}},
          {"hiwi_gpt2", "gpt2", {{"peft_type", "HIWI"}, {"r", 4}}},
          {"pst_llama", "llama", {{"peft_type", "PST"}, {"target_modules", {"q_proj", "v_proj", "up_proj"}}, {"weight_rank", 4}}},
          {"diff_pruning_llama", "llama", {{"peft_type", "DIFF_PRUNING"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}}},
          {"intrinsic_dimension_gpt2", "gpt2",
           {{"peft_type", "INTRINSIC_DIMENSION"}, {"target_modules", {"c_attn", "c_proj", "c_fc"}}, {"intrinsic_dimension", 400}}},
          // HF PEFT 0.21's methods of issue 20 (their live parity rows are in python-parity/table.py)
          {"peanut_llama", "llama",
           {{"peft_type", "PEANUT"}, {"r", 4}, {"depth", 1}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"supertuning_llama", "llama",
           {{"peft_type", "SUPERTUNING"}, {"sparsity", 0.9}, {"r", 2}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"osf_llama", "llama", {{"peft_type", "OSF"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}}},
          {"waveft_gpt2", "gpt2",
           {{"peft_type", "WAVEFT"}, {"n_frequency", 64}, {"target_modules", {"c_attn", "c_proj"}}, {"fan_in_fan_out", true}}},
          // qwen2's query/key/value projections have biases, so BEFT merges there
          {"beft_qwen2", "qwen2", {{"peft_type", "BEFT"}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"delora_llama", "llama", {{"peft_type", "DELORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"gralora_gpt2", "gpt2", gralora},
          {"hira_llama", "llama", {{"peft_type", "HIRA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj", "embed_tokens"}}}},
          {"lily_llama", "llama", {{"peft_type", "LILY"}, {"r", 4}, {"stride_A", 2}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"tinylora_llama", "llama", tinylora},
          {"unilora_gpt2", "gpt2", unilora, false},
          // HF PEFT's weight tuners without golden cases (their live rows are in python-parity/table.py)
          // PVeRA samples its latent in training with noise of about unit scale: at the default d_initial 0.1 the mean
          // is a tenth of it and 20 steps do not lower the loss; at 1.0 they do
          {"pvera_llama", "llama",
           {{"peft_type", "PVERA"}, {"r", 8}, {"d_initial", 1.0}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"deft_gpt2", "gpt2", {{"peft_type", "DEFT"}, {"r", 4}, {"target_modules", {"c_attn", "c_fc"}}}},
          {"glora_llama", "llama", {{"peft_type", "GLORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}},
          {"psoft_llama", "llama", {{"peft_type", "PSOFT"}, {"r", 8}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}}},
          // (FRoD's init gives W back only up to f32 rounding: no identity)
          {"frod_gpt2", "gpt2", {{"peft_type", "FROD"}, {"target_modules", {"c_attn", "c_fc"}}, {"sparse_rate", 0.05}},
           false},
          {"adamss_llama", "llama",
           {{"peft_type", "ADAMSS"}, {"r", 16}, {"num_subspaces", 3}, {"subspace_rank", 2}, {"target_modules", {"q_proj", "v_proj"}}}}};
}

// The peft_types the cases above run.
inline std::set<std::string> covered_methods() {
  std::set<std::string> out;
  for (const auto& c : golden_cases()) out.insert(c.method);
  for (const auto& c : generated_cases()) out.insert(c.config["peft_type"].get<std::string>());
  return out;
}

}  // namespace contract_cases
