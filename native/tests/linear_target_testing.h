// Test helpers shared by the tests of the methods that wrap one dense projection (VeRA, FourierFT, RandLoRA, SHiRA,
// C3A): golden cases and models, logits, base weights, temporary dirs, error checks, merge/unmerge.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/peft_model.h"
#include "golden_testing.h"

namespace linear_target_testing {

using namespace golden_testing;

inline nlohmann::json golden_config(const std::string& name) {
  return peft4j::io::read_json_file(case_dir(name) + "/adapter/adapter_config.json");
}

inline peft4j::io::TensorMap golden_tensors(const std::string& name) {
  return peft4j::io::read_safetensors(case_dir(name) + "/adapter/adapter_model.safetensors");
}

template <typename Layer>
Layer& layer_at(PeftModel& model, const std::string& path) {
  auto* layer = dynamic_cast<Layer*>(peft4j::tuners::module_at(model.base_model(), path).get());
  if (!layer) throw std::runtime_error("no adapter layer of the expected type at " + path);
  return *layer;
}

// Merged logits equal unmerged ones; unmerge puts every base weight back.
inline void expect_merge_round_trip(PeftModel& model, const std::map<std::string, at::Tensor>& before,
                                    const peft4j::models::ModelInputs& in, const std::string& what) {
  at::Tensor unmerged = logits(model, in);
  model.merge();
  EXPECT_TRUE(at::allclose(logits(model, in), unmerged, 1e-4, 1e-5)) << what << ": merged != unmerged";
  model.unmerge();
  for (const auto& p : model.base_model().named_parameters()) {
    std::string key = p.key();
    if (auto pos = key.find(".base_layer"); pos != std::string::npos) key.erase(pos, std::string(".base_layer").size());
    if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before.at(key), 1e-5, 1e-6)) << what << ": " << key;
  }
  EXPECT_TRUE(at::allclose(logits(model, in), unmerged, 1e-4, 1e-5)) << what << ": unmerge changed the outputs";
}

// Our saved copy of a golden adapter equals PEFT's file: same keys, same tensors, same config fields.
inline void expect_saved_equals_golden(const std::string& name, const std::string& arch) {
  auto model = peft(arch);
  model->load_adapter(case_dir(name) + "/adapter", "default");
  std::string out = temp_dir(name);
  model->save_adapter(out, "default");
  auto theirs = golden_tensors(name);
  auto ours = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(ours.size(), theirs.size()) << name;
  for (const auto& [key, t] : theirs) {
    ASSERT_TRUE(ours.count(key)) << name << ": " << key;
    EXPECT_EQ(ours[key].scalar_type(), t.scalar_type()) << name << ": " << key;
    EXPECT_TRUE(at::equal(ours[key], t)) << name << ": " << key;
  }
  auto their_config = golden_config(name);
  auto our_config = peft4j::io::read_json_file(out + "/adapter_config.json");
  for (auto it = their_config.begin(); it != their_config.end(); ++it)
    EXPECT_EQ(our_config[it.key()], it.value()) << name << ": field " << it.key();
}

// The adapter's saved keys are PEFT's: "base_model.model.<module>.<suffix>" for every module and suffix, and `extra`.
inline void expect_saved_keys(PeftModel& model, const std::string& adapter, const std::vector<std::string>& modules,
                              const std::vector<std::string>& suffixes, const std::vector<std::string>& extra = {}) {
  std::set<std::string> want(extra.begin(), extra.end());
  for (const auto& m : modules)
    for (const auto& s : suffixes) want.insert("base_model.model." + m + "." + s);
  std::set<std::string> got;
  for (const auto& [key, t] : model.adapter_state_dict(adapter)) got.insert(key);
  EXPECT_EQ(got, want);
}

// A mixed batch is refused, naming the method.
inline void expect_mixed_batch_refused(PeftModel& model, const std::vector<std::string>& rows,
                                       const peft4j::models::ModelInputs& in, const std::string& method) {
  expect_error([&] { model.forward_mixed(in, rows); }, peft4j::ErrorKind::Unsupported, method);
}

}  // namespace linear_target_testing
