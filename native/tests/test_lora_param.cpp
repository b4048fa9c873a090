// target_parameters (lora.ParamWrapper): the wrapped module runs with W + ΔW, keys are PEFT's, merging, several
// adapters on the same parameters, and what PEFT refuses.
#include "linear_target_testing.h"
#include "peft4j/tuners/lora_param.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::LoraParamLayer;

nlohmann::json params(nlohmann::json extra = nlohmann::json::object()) {
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
                           {"target_modules", nlohmann::json::array()},
                           {"target_parameters", {"self_attn.v_proj.weight", "mlp.down_proj.weight"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(LoraParam, ModuleRunsWithTheAdaptedParameter) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", params());
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.size(), 8u);  // 2 layers x 2 parameters x (A, B)
  EXPECT_EQ(state.at("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight").sizes(), at::IntArrayRef({4, 64}));
  EXPECT_EQ(state.at("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").sizes(), at::IntArrayRef({32, 4}));
  auto& v = layer_at<LoraParamLayer>(*model, "model.layers.1.self_attn.v_proj");
  at::Tensor a = state.at("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  at::Tensor b = state.at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  at::Tensor w = before.at("model.layers.1.self_attn.v_proj.weight");
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(v.forward(x), at::linear(x, w + at::matmul(b, a) * 2.0), 1e-4, 1e-6));
  expect_merge_round_trip(*model, before, in, "target_parameters");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "ParamWrapper");
}

TEST(LoraParam, ConvAndEmbeddingParametersInTheirOwnLayout) {
  auto model = peft("gpt2");
  model->add_adapter("default", params({{"target_parameters", {"attn.c_attn.weight", "wte.weight"}}}));
  auto state = model->adapter_state_dict("default");
  // Conv1D stores [in 64, out 192]: A spans shape[1], B shape[0], so ΔW = B·A has the stored layout.
  EXPECT_EQ(state.at("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").sizes(), at::IntArrayRef({4, 192}));
  EXPECT_EQ(state.at("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").sizes(), at::IntArrayRef({64, 4}));
  EXPECT_EQ(state.at("base_model.model.transformer.wte.lora_A.weight").sizes(), at::IntArrayRef({4, 64}));
  EXPECT_EQ(state.at("base_model.model.transformer.wte.lora_B.weight").sizes(), at::IntArrayRef({256, 4}));
  auto& wte = layer_at<LoraParamLayer>(*model, "transformer.wte");
  at::Tensor ids = at::randint(0, 256, {2, 5});
  at::NoGradGuard no_grad;
  at::Tensor weight = wte.base_layer()->named_parameters(false)["weight"] + wte.delta_weight("default");
  EXPECT_TRUE(at::allclose(wte.forward(ids), at::embedding(weight, ids), 1e-5, 1e-6));
}

TEST(LoraParam, RefusesWhatParamWrapperCannotDo) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", params(extra)); }; };
  expect_error(add({{"lora_dropout", 0.1}}), ErrorKind::InvalidArgument, "lora_dropout");
  expect_error(add({{"lora_bias", true}}), ErrorKind::InvalidArgument, "lora_bias");
  expect_error(add({{"use_dora", true}}), ErrorKind::InvalidArgument, "variants");
  expect_error(add({{"target_parameters", "v_proj.weight"}}), ErrorKind::InvalidArgument, "'target_parameters'");
  expect_error(add({{"target_parameters", {"input_layernorm.weight"}}}), ErrorKind::Unsupported, "2d");
  expect_error(add({{"target_modules", {"v_proj"}}}), ErrorKind::InvalidArgument, "also targeted");
  expect_error(add({{"target_parameters", {"nothing.weight"}}}), ErrorKind::InvalidArgument, "target_parameters");
  EXPECT_TRUE(model->adapter_names().empty());
  model->add_adapter("first", params());
  expect_error(add({{"target_parameters", {"self_attn.v_proj.weight"}}}), ErrorKind::InvalidArgument, "same set");
  model->add_adapter("second", params({{"r", 2}}));
  auto& v = layer_at<LoraParamLayer>(*model, "model.layers.0.self_attn.v_proj");
  EXPECT_TRUE(v.has_adapter("first") && v.has_adapter("second"));
}

}  // namespace
