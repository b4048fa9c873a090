// The tuner contract (test_tuner_contract.cpp) for the methods without golden cases (contract_cases.h): on tiny
// models the test builds, inject -> identity -> 20 training steps lower the loss -> save -> load into a fresh base
// gives identical logits -> a second adapter beside the first (switching, deleting) -> merge equals unmerged where the
// method can merge, a named Unsupported error where it cannot.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "contract_cases.h"
#include "golden_testing.h"
#include "peft4j/tuners/tuner.h"

namespace {

using namespace adapter_family_testing;
using peft4j::tuners::PeftModel;

using contract_cases::GeneratedCase;

class GeneratedContract : public ::testing::TestWithParam<GeneratedCase> {};

TEST_P(GeneratedContract, IdentityTrainSaveLoadMultipleMerge) {
  const auto& c = GetParam();
  const auto& tuner = peft4j::tuners::tuner_for(c.config["peft_type"].get<std::string>());
  auto model = std::make_shared<PeftModel>(tiny_model(c.family));
  auto in = permutation_batch(4, 8, 11);
  at::Tensor base = golden_testing::logits(*model, in);

  // 1. identity init; a method without one gives the base logits when disabled
  auto identity = tuner.identity_config(c.config);
  ASSERT_EQ(identity.has_value(), c.identity_init) << c.name;
  model->add_adapter("default", identity.value_or(c.config));
  if (!c.identity_init) model->set_disabled(true);
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), base, 1e-6, 1e-6)) << c.name;
  model->set_disabled(false);

  // 2. training lowers the loss
  auto [first, last] = train(*model, 20);
  EXPECT_LT(last, first - 0.01) << c.name << ": " << first << " -> " << last;
  at::Tensor trained = golden_testing::logits(*model, in);

  // 3. save, load into a fresh base: identical logits
  std::string dir = golden_testing::temp_dir("family_" + c.name);
  model->save_adapter(dir, "default");
  auto fresh = std::make_shared<PeftModel>(tiny_model(c.family));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), trained)) << c.name;

  // 4. a second adapter: switching selects it, the first is untouched, deleting it leaves no trace
  fresh->load_adapter(dir, "second", /*trainable=*/true);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : fresh->trainable_parameters()) p.add_(at::randn_like(p) * 0.05);
  }
  fresh->set_adapter("second");
  at::Tensor second = golden_testing::logits(*fresh, in);
  EXPECT_FALSE(at::allclose(second, trained)) << c.name;
  fresh->set_adapter("default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), trained)) << c.name;
  fresh->delete_adapter("second");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), trained)) << c.name;
  fresh->set_disabled(true);
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), base)) << c.name;
  fresh->set_disabled(false);

  // 5. merge where the method can
  try {
    model->merge();
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), peft4j::ErrorKind::Unsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find(tuner.peft_type()), std::string::npos) << e.what();
    return;
  }
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), trained, 1e-4, 1e-4)) << c.name;
  model->unmerge();
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), trained, 1e-4, 1e-4)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GeneratedContract, ::testing::ValuesIn(contract_cases::generated_cases()),
                         [](const ::testing::TestParamInfo<GeneratedCase>& info) { return info.param.name; });

}  // namespace
