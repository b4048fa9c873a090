// BEFT beyond the parity run: the adapter adds its vector to the layer output (summed over active adapters), PEFT's
// keys, merging into the layer's bias (refused where the layer has none, as PEFT raises), identity init, refusals.
#include "linear_target_testing.h"
#include "peft4j/tuners/beft.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json beft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "BEFT"}, {"target_modules", {"v_proj"}}, {"init_weights", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Beft, SavesPeftsKeysAndShapes) {
  // PEFT 0.21 saves BeftConfig(target_modules=["v_proj"]) on this llama as one [1, out] tensor per layer.
  auto model = peft("llama");
  model->add_adapter("default", beft({}));
  auto state = model->adapter_state_dict("default");
  ASSERT_EQ(state.size(), 2u);
  for (const char* key : {"base_model.model.model.layers.0.self_attn.v_proj.beft_bias",
                          "base_model.model.model.layers.1.self_attn.v_proj.beft_bias"}) {
    ASSERT_TRUE(state.count(key)) << key;
    EXPECT_EQ(state.at(key).sizes(), (std::vector<int64_t>{1, 32}));
  }
  EXPECT_EQ(model->trainable_parameter_count(), 64);
}

TEST(Beft, AddsTheSumOfTheActiveVectorsToTheOutput) {
  auto model = peft("llama");
  model->add_adapter("a", beft({}));
  model->add_adapter("b", beft({}));
  model->set_active_adapters({"a", "b"});
  auto& layer = layer_at<peft4j::tuners::BeftLayer>(*model, "model.layers.1.self_attn.v_proj");
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  at::Tensor expected = layer.base_forward(x) + layer.bias("a").flatten() + layer.bias("b").flatten();
  EXPECT_TRUE(at::allclose(layer.forward(x), expected, 1e-6, 1e-6));
  model->set_adapter("b");
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + layer.bias("b").flatten(), 1e-6, 1e-6));
}

TEST(Beft, MergesIntoTheBiasWhereTheLayerHasOne) {
  auto in = batch("lora_qwen2");
  auto model = peft("qwen2");  // q/k/v projections with biases
  auto before = base_weights(*model);
  model->add_adapter("default", beft({{"target_modules", {"q_proj", "v_proj"}}}));
  auto& layer = layer_at<peft4j::tuners::BeftLayer>(*model, "model.layers.0.self_attn.q_proj");
  at::Tensor bias = before.at("model.layers.0.self_attn.q_proj.bias");
  model->merge();
  EXPECT_TRUE(at::allclose(peft4j::tuners::linear_bias(*layer.base_layer()), bias + layer.bias("default").squeeze()));
  model->unmerge();
  expect_merge_round_trip(*model, before, in, "beft");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "BEFT");
}

TEST(Beft, MergeRefusedWithoutABiasAndIdentityInit) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");  // no biases
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", beft({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", beft({}));
  at::Tensor adapted = logits(*model, in);
  EXPECT_FALSE(at::allclose(adapted, base));
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "BEFT");
  EXPECT_TRUE(at::equal(logits(*model, in), adapted));
}

TEST(Beft, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("x", beft({{"init_weights", "zeros"}})); }, ErrorKind::InvalidArgument,
               "'init_weights'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // Conv1D is not a BEFT target (PEFT takes nn.Linear only)
  expect_error([&] { gpt2->add_adapter("x", beft({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
