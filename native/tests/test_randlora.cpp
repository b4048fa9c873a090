// RandLoRA beyond the parity run: the shared bases are PEFT's bf16 numbers, saved per layer too, save_projection
// false, sparse bases, merge on Linear (both orientations) and Conv1D, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/randlora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json randlora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "RANDLORA"}, {"r", 8}, {"randlora_alpha", 16},
                           {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(RandLora, FreshBasesAreBitForBitPefts) {
  auto model = peft("llama");
  model->add_adapter("default", golden_config("randlora_llama"));
  auto ours = model->adapter_state_dict("default");
  auto theirs = golden_tensors("randlora_llama");
  for (const std::string key : {"base_model.randlora_A", "base_model.randlora_B",
                                "base_model.model.model.layers.1.self_attn.v_proj.randlora_A"}) {
    ASSERT_TRUE(ours.count(key)) << key;
    EXPECT_TRUE(at::equal(ours[key], theirs[key])) << key;
  }
}

TEST(RandLora, SavedAdapterEqualsPeftsFileWithPerLayerBases) { expect_saved_equals_golden("randlora_llama", "llama"); }

TEST(RandLora, SaveProjectionFalseLeavesBasesOutAndRegeneratesThem) {
  auto in = batch("randlora_llama");
  auto model = peft("llama");
  model->add_adapter("default", randlora({{"save_projection", false}, {"init_weights", false}}));
  std::string out = temp_dir("randlora_noproj");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 8u);  // λ and γ of 4 layers
  for (const auto& [key, t] : saved) {
    EXPECT_EQ(key.find("randlora_A"), std::string::npos) << key;
    EXPECT_EQ(key.find("randlora_B"), std::string::npos) << key;
  }
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), logits(*model, in)));
}

TEST(RandLora, SparseBasesAreTernary) {
  for (const std::string option : {"sparse", "very_sparse"}) {
    auto model = peft("llama");
    model->add_adapter("default", randlora({{option, true}}));
    auto state = model->adapter_state_dict("default");
    for (const std::string key : {"base_model.randlora_A", "base_model.randlora_B"}) {
      at::Tensor values = std::get<0>(at::_unique(state.at(key)));
      ASSERT_EQ(values.numel(), 3) << option << " " << key;
      EXPECT_EQ(values[1].item<double>(), 0.0) << option << " " << key;
      EXPECT_NEAR(values[0].item<double>(), -values[2].item<double>(), 1e-6) << option << " " << key;
    }
  }
}

TEST(RandLora, MergeEqualsUnmergedOnLinearAndConv1D) {
  // down_proj (128 -> 64) puts the γ-scaled basis on the output side.
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj", "up_proj"}}, {"gpt2", {"c_attn", "c_proj", "c_fc"}}}) {
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->add_adapter("default", randlora({{"target_modules", targets}, {"init_weights", false}}));
    expect_merge_round_trip(*model, before, batch(arch == "llama" ? "randlora_llama" : "lora_gpt2"), "randlora " + arch);
  }
}

TEST(RandLora, IdentityInitAndGammaAsPeftResetsIt) {
  auto in = batch("randlora_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", randlora({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  auto state = model->adapter_state_dict("default");
  // v_proj: 64 -> 32, r 8: γ is [4 bases, 32] filled with 1 / max(4, 32)
  at::Tensor gamma = state.at("base_model.model.model.layers.0.self_attn.v_proj.randlora_gamma");
  EXPECT_EQ(gamma.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_TRUE(at::equal(gamma, at::full({4, 32}, 1.0 / 32)));
  EXPECT_EQ(model->trainable_parameter_count(), 1472);  // as PEFT counts for this shape (randlora_llama)
}

TEST(RandLora, TwoAdaptersAndMixedBatchRefused) {
  auto in = batch("randlora_llama");
  auto model = peft("llama");
  model->add_adapter("a", randlora({{"init_weights", false}}));
  model->add_adapter("b", randlora({{"init_weights", false}, {"r", 4}}));
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "RANDLORA");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
}

TEST(RandLora, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", randlora(extra)); }; };
  expect_error(add({{"r", -1}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"randlora_dropout", -0.1}}), ErrorKind::InvalidArgument, "'randlora_dropout'");
  expect_error(add({{"bias", "randlora_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"sparse", "yes"}}), ErrorKind::InvalidArgument, "'sparse'");
  expect_error(add({{"randlora_alpha", "x"}}), ErrorKind::InvalidArgument, "'randlora_alpha'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
