// SHiRA beyond the parity run: the random mask is PEFT's (default and explicit seeds), its size and order, int32
// positions saved as PEFT saves them, merge, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/shira.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json shira(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "SHIRA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Shira, FreshMaskIsPeftsDefaultSeededMask) {
  auto model = peft("llama");
  model->add_adapter("default", golden_config("shira_llama"));
  auto ours = model->adapter_state_dict("default");
  for (const auto& [key, t] : golden_tensors("shira_llama")) {
    if (key.find("shira_indices") == std::string::npos) continue;
    ASSERT_TRUE(ours.count(key)) << key;
    EXPECT_EQ(ours[key].scalar_type(), at::kInt) << key;
    EXPECT_TRUE(at::equal(ours[key], t)) << key;
  }
}

TEST(Shira, SavedAdapterEqualsPeftsFile) { expect_saved_equals_golden("shira_llama", "llama"); }

TEST(Shira, SeededMaskHasRTimesInPlusOutDistinctPositionsInRowMajorOrder) {
  auto model = peft("llama");
  model->add_adapter("seeded", shira({{"random_seed", 42}, {"r", 2}}));
  model->add_adapter("plain", shira({{"r", 2}}));
  auto& layer = layer_at<peft4j::tuners::ShiraLayer>(*model, "model.layers.0.self_attn.v_proj");  // 64 -> 32
  at::Tensor seeded = layer.indices("seeded").to(at::kLong);
  ASSERT_EQ(seeded.sizes(), (std::vector<int64_t>{2, 2 * (64 + 32)}));
  at::Tensor flat = seeded[0] * 64 + seeded[1];
  EXPECT_TRUE(at::equal(flat, std::get<0>(flat.sort())));
  EXPECT_EQ(std::get<0>(at::_unique(flat)).numel(), flat.numel());
  EXPECT_LT(seeded[0].max().item<int64_t>(), 32);
  EXPECT_FALSE(at::equal(seeded, layer.indices("plain").to(at::kLong)));
}

TEST(Shira, MergeEqualsUnmergedAndIdentityInit) {
  auto in = batch("shira_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", shira({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", shira({{"init_weights", false}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}}));
  expect_merge_round_trip(*model, before, in, "shira");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "SHIRA");
}

TEST(Shira, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", shira(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"r", 30}}), ErrorKind::InvalidArgument, "'r'");  // 30 · (64 + 32) > 64 · 32 on v_proj
  expect_error(add({{"mask_type", "magnitude"}}), ErrorKind::Unsupported, "'mask_type'");
  expect_error(add({{"random_seed", "seven"}}), ErrorKind::InvalidArgument, "'random_seed'");
  expect_error(add({{"target_modules", {"c_attn"}}}), ErrorKind::InvalidArgument, "c_attn");
  EXPECT_TRUE(model->adapter_names().empty());
  // Conv1D is not a SHiRA target (PEFT takes nn.Linear only).
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", shira({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
