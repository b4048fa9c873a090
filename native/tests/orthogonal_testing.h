// Helpers shared by the tests of the orthogonal methods (test_oft.cpp, test_boft.cpp, test_hra.cpp, test_road.cpp).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <string>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"
#include "golden_testing.h"

namespace orthogonal_testing {

using namespace golden_testing;

// The base model's tensors match `before` (taken before any adapter was added) after unmerging.
inline void expect_base_restored(PeftModel& model, std::map<std::string, at::Tensor>& before, double rtol, double atol) {
  for (const auto& p : model.base_model().named_parameters()) {
    std::string key = p.key();
    if (auto pos = key.find(".base_layer"); pos != std::string::npos) key.erase(pos, std::string(".base_layer").size());
    if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before[key], rtol, atol)) << key;
  }
}

// Saving the golden case's adapter gives PEFT's file back: the same keys, tensors and config fields.
inline void expect_saved_like_peft(const std::string& case_name) {
  auto model = peft(peft4j::io::read_json_file(case_dir(case_name) + "/case.json")["arch"].get<std::string>());
  model->load_adapter(case_dir(case_name) + "/adapter", "default");
  std::string out = temp_dir(case_name);
  model->save_adapter(out, "default");
  auto theirs = peft4j::io::read_safetensors(case_dir(case_name) + "/adapter/adapter_model.safetensors");
  auto ours = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  ASSERT_EQ(ours.size(), theirs.size());
  for (const auto& [key, t] : theirs) {
    ASSERT_TRUE(ours.count(key)) << key;
    EXPECT_TRUE(at::equal(ours[key], t)) << key;
  }
  auto their_config = peft4j::io::read_json_file(case_dir(case_name) + "/adapter/adapter_config.json");
  auto our_config = peft4j::io::read_json_file(out + "/adapter_config.json");
  for (auto it = their_config.begin(); it != their_config.end(); ++it)
    EXPECT_EQ(our_config[it.key()], it.value()) << "field " << it.key();
}

// The layer of type L at `path` (relative to the base model).
template <typename L>
L& layer_at(PeftModel& model, const std::string& path) {
  for (const auto& item : model.base_model().named_modules("", false))
    if (item.key() == path)
      if (auto* layer = dynamic_cast<L*>(item.value().get())) return *layer;
  throw std::runtime_error("no adapter layer of the expected type at " + path);
}

}  // namespace orthogonal_testing
