// DeLoRA beyond the parity run: PEFT's saved keys, ΔW recomputed from the saved tensors (the column norms frozen when
// the adapter was added), rank and lambda patterns, merge, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/delora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::DeloraLayer;

nlohmann::json delora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "DELORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

const std::vector<std::string> kQV = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                      "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"};

TEST(Delora, SavedKeysArePeftsAndTheUpdateIsRecomputedFromThem) {
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", delora({{"init_weights", false}, {"delora_lambda", 7}}));
  expect_saved_keys(*model, "default", kQV, {"delora_A", "delora_B", "delora_lambda", "delora_w_norm"});
  EXPECT_EQ(model->trainable_parameter_count(), 2 * (4 * 64 + 64 * 4 + 1) + 2 * (4 * 64 + 32 * 4 + 1));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.0.self_attn.v_proj.";
  at::Tensor a = state.at(p + "delora_A"), b = state.at(p + "delora_B"), lambda = state.at(p + "delora_lambda");
  at::Tensor w_norm = state.at(p + "delora_w_norm");
  at::Tensor w = before.at("model.layers.0.self_attn.v_proj.weight");  // [32, 64]
  EXPECT_TRUE(at::allclose(w_norm, w.pow(2).sum(0).sqrt()));
  EXPECT_EQ(lambda.item<double>(), 7.0);
  // ΔW = B · diag(λ / r / (‖A_i‖ ‖B_·i‖)) · A, column j times ‖W_·j‖
  at::Tensor term = lambda / 4.0 / (a.pow(2).sum(1).sqrt() * b.pow(2).sum(0).sqrt());
  at::Tensor delta = at::matmul(b * term, a) * w_norm;
  auto& layer = layer_at<DeloraLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor x = at::randn({3, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta, 1e-5, 1e-6));
}

TEST(Delora, PatternsSetRankAndBoundPerModule) {
  auto model = peft("llama");
  model->add_adapter("default", delora({{"rank_pattern", {{"v_proj", 2}}}, {"lambda_pattern", {{"q_proj", 3.5}}}}));
  auto state = model->adapter_state_dict("default");
  const std::string q = "base_model.model.model.layers.1.self_attn.q_proj.";
  const std::string v = "base_model.model.model.layers.1.self_attn.v_proj.";
  EXPECT_EQ(state.at(q + "delora_A").sizes(), (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(state.at(v + "delora_A").sizes(), (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(state.at(v + "delora_B").sizes(), (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(state.at(q + "delora_lambda").item<double>(), 3.5);
  EXPECT_EQ(state.at(v + "delora_lambda").item<double>(), 15.0);  // PEFT's default delora_lambda
  // kaiming-uniform A (a = √5): within 1/√in; B starts at zero (init_weights true)
  EXPECT_LE(state.at(q + "delora_A").abs().max().item<double>(), 1.0 / 8.0);
  EXPECT_EQ(state.at(q + "delora_B").abs().max().item<double>(), 0.0);
}

TEST(Delora, IdentityInitMergeEqualsUnmergedAndMixedBatchRefused) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", delora({}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", delora({{"init_weights", false}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}}));
  EXPECT_FALSE(at::allclose(logits(*model, in), base, 1e-3, 1e-3));
  expect_merge_round_trip(*model, before, in, "delora");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "DELORA");
}

TEST(Delora, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", delora(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"bias", "delora_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"module_dropout", 1.5}}), ErrorKind::InvalidArgument, "'module_dropout'");
  expect_error(add({{"rank_pattern", {{"q_proj", 0}}}}), ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error(add({{"lambda_pattern", {{"q_proj", "big"}}}}), ErrorKind::InvalidArgument, "'lambda_pattern'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // PEFT's DeLoRA wraps nn.Linear only
  expect_error([&] { gpt2->add_adapter("x", delora({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "c_attn");
}

}  // namespace
