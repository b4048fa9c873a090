// VeRA beyond the parity run: the shared projections are PEFT's own numbers, save_projection false, merge on Linear
// and Conv1D, identity init, several adapters, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/vera.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json vera(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "VERA"}, {"r", 8}, {"target_modules", {"q_proj", "o_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Vera, FreshProjectionsAreBitForBitPefts) {
  // A new adapter (nothing loaded) draws vera_A / vera_B from projection_prng_key exactly as PEFT did.
  auto model = peft("llama");
  model->add_adapter("default", golden_config("vera_llama"));
  auto ours = model->adapter_state_dict("default");
  auto theirs = golden_tensors("vera_llama");
  for (const std::string key : {"base_model.vera_A", "base_model.vera_B"}) {
    ASSERT_TRUE(ours.count(key)) << key;
    EXPECT_TRUE(at::equal(ours[key], theirs[key])) << key;
  }
}

TEST(Vera, SavedAdapterEqualsPeftsFile) { expect_saved_equals_golden("vera_llama", "llama"); }

TEST(Vera, SaveProjectionFalseLeavesProjectionsOutAndRegeneratesThem) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("default", vera({{"save_projection", false}, {"init_weights", false}, {"projection_prng_key", 5}}));
  std::string out = temp_dir("vera_noproj");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 8u);  // λ_b and λ_d of 4 layers, no projections
  for (const auto& [key, t] : saved) EXPECT_EQ(key.find("vera_A"), std::string::npos) << key;
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), logits(*model, in)));
}

TEST(Vera, MergeEqualsUnmergedOnLinearAndConv1D) {
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "c_proj"}}}) {
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->add_adapter("default", vera({{"target_modules", targets}, {"init_weights", false}}));
    expect_merge_round_trip(*model, before, batch(arch == "llama" ? "vera_llama" : "lora_gpt2"), "vera " + arch);
  }
}

TEST(Vera, IdentityInitLeavesTheModelUnchangedAndCountsParameters) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", vera({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  EXPECT_EQ(model->trainable_parameter_count(), 4 * (64 + 8));  // λ_b [out] + λ_d [r] on 2 × (q, o)
  auto& layer = layer_at<peft4j::tuners::VeraLayer>(*model, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(layer.delta_weight("default").abs().max().item<double>(), 0.0);
}

TEST(Vera, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", vera(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"bias", "vera_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"bias", "some"}}), ErrorKind::InvalidArgument, "'bias'");
  expect_error(add({{"vera_dropout", 1.0}}), ErrorKind::InvalidArgument, "'vera_dropout'");
  expect_error(add({{"projection_prng_key", nullptr}}), ErrorKind::InvalidArgument, "'projection_prng_key'");
  expect_error(add({{"layers_pattern", "layers"}}), ErrorKind::InvalidArgument, "'layers_pattern'");
  expect_error(add({{"target_modules", nullptr}}), ErrorKind::InvalidArgument, "'target_modules'");
  expect_error(add({{"d_initial", "big"}}), ErrorKind::InvalidArgument, "'d_initial'");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(Vera, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", vera({{"init_weights", false}}));
  model->add_adapter("b", vera({{"init_weights", false}, {"r", 4}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "VERA");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
  EXPECT_EQ(model->adapter_state_dict("b").count("base_model.vera_A"), 1u);
  EXPECT_EQ(model->adapter_state_dict("b").at("base_model.vera_A").size(0), 4);  // b's own rank
}

}  // namespace
