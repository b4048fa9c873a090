// layer_replication: the layer stack rebuilt from ranges, repeated layers sharing their base weights with adapters of
// their own, merging refused, bad ranges and families without one layer list refused.
#include "linear_target_testing.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json replicated(const nlohmann::json& ranges) {
  return {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
          {"target_modules", {"q_proj", "v_proj"}}, {"layer_replication", ranges}};
}

TEST(LoraLayerReplication, RepeatedLayersShareBaseWeightsAndTrainTheirOwnAdapters) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");  // 2 layers
  model->add_adapter("default", replicated({{0, 2}, {1, 2}}));  // layers 0, 1, 1
  EXPECT_EQ(model->base_model().num_layers(), 3);
  auto params = model->base_model().named_parameters();
  const std::string l1 = "model.layers.1.self_attn.q_proj.", l2 = "model.layers.2.self_attn.q_proj.";
  ASSERT_TRUE(params.contains(l2 + "base_layer.weight"));
  EXPECT_EQ(params[l2 + "base_layer.weight"].data_ptr(), params[l1 + "base_layer.weight"].data_ptr());
  EXPECT_EQ(params["model.layers.2.input_layernorm.weight"].data_ptr(),
            params["model.layers.1.input_layernorm.weight"].data_ptr());
  EXPECT_NE(params[l2 + "lora_A.default.weight"].data_ptr(), params[l1 + "lora_A.default.weight"].data_ptr());
  EXPECT_FALSE(at::equal(params[l2 + "lora_A.default.weight"], params[l1 + "lora_A.default.weight"]));
  auto saved = model->adapter_state_dict("default");
  EXPECT_TRUE(saved.count("base_model.model." + l2 + "lora_B.weight"));
  // The copy changes the output: three layers run, not two.
  at::Tensor adapted = logits(*model, in);
  model->set_disabled(true);
  at::Tensor replicated_base = logits(*model, in);
  model->set_disabled(false);
  EXPECT_FALSE(at::allclose(replicated_base, logits(*peft("llama"), in), 1e-3, 1e-3));
  EXPECT_GT((adapted - replicated_base).abs().max().item<double>(), 1e-4);
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "layer_replication");
}

TEST(LoraLayerReplication, RefusesBadRangesAndModelsWithoutOneLayerList) {
  expect_error([&] { peft("llama")->add_adapter("default", replicated({{0, 3}})); }, ErrorKind::InvalidArgument,
               "outside the model's 2 layers");
  expect_error([&] { peft("llama")->add_adapter("default", replicated({{0}})); }, ErrorKind::InvalidArgument,
               "'layer_replication'");
  nlohmann::json gpt2 = replicated({{0, 1}});
  gpt2["target_modules"] = {"c_attn"};
  expect_error([&] { peft("gpt2")->add_adapter("default", gpt2); }, ErrorKind::Unsupported, "layer_replication");
}

}  // namespace
