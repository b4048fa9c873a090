// Lily beyond the parity run: which layers share lily_A (stride_A blocks) and lily_B (one per target and shape), the
// saved keys (every layer's copy, as PEFT's state dict), the router mix recomputed from the weights, merge and mixed
// batches refused, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/lily.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::LilyLayer;

nlohmann::json lily(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "LILY"}, {"r", 4}, {"num_B", 3}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

const void* weight_of(PeftModel& model, const std::string& path, const std::string& part,
                      const std::string& adapter = "default") {
  auto module = peft4j::tuners::module_at(model.base_model(), path + "." + part + "." + adapter);
  return module->named_parameters()["weight"].unsafeGetTensorImpl();
}

TEST(Lily, StrideBlocksShareATargetsShareBAndFilesHoldEveryCopy) {
  // A 3-layer llama (hidden 32, v_proj 32 -> 16)
  nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 32}, {"hidden_size", 32}, {"intermediate_size", 64},
                           {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                           {"max_position_embeddings", 64}};
  auto model = std::make_shared<PeftModel>(peft4j::models::create_model(config));
  model->add_adapter("default", lily({{"stride_A", 2}, {"init_weights", false}}));
  auto q = [](int i) { return "model.layers." + std::to_string(i) + ".self_attn.q_proj"; };
  auto v = [](int i) { return "model.layers." + std::to_string(i) + ".self_attn.v_proj"; };
  EXPECT_EQ(weight_of(*model, q(0), "lily_A"), weight_of(*model, q(1), "lily_A"));
  EXPECT_NE(weight_of(*model, q(1), "lily_A"), weight_of(*model, q(2), "lily_A"));
  EXPECT_NE(weight_of(*model, q(0), "lily_A"), weight_of(*model, v(0), "lily_A"));
  EXPECT_EQ(weight_of(*model, q(0), "lily_B"), weight_of(*model, q(2), "lily_B"));
  EXPECT_EQ(weight_of(*model, v(0), "lily_B"), weight_of(*model, v(2), "lily_B"));
  EXPECT_NE(weight_of(*model, q(0), "lily_B"), weight_of(*model, v(0), "lily_B"));
  EXPECT_NE(weight_of(*model, q(0), "lily_router"), weight_of(*model, q(1), "lily_router"));
  // Trained once each: per target 2 A blocks of [4, 32], one B [3·4, out], 3 routers [3, 4] (q: out 32, v: 16)
  EXPECT_EQ(model->trainable_parameter_count(), 2 * (2 * 4 * 32) + 12 * 32 + 12 * 16 + 6 * 12);
  expect_saved_keys(*model, "default", {q(0), q(1), q(2), v(0), v(1), v(2)},
                    {"lily_A.weight", "lily_B.weight", "lily_router.weight"});
}

TEST(Lily, GroupsAreTheLongestMatchingTargetAndTheShapeOrTheWholeRegex) {
  auto model = peft("llama");
  auto q0 = "model.layers.0.self_attn.q_proj", q1 = "model.layers.1.self_attn.q_proj";
  auto o0 = "model.layers.0.self_attn.o_proj", o1 = "model.layers.1.self_attn.o_proj";
  // layer 1's q_proj ends with both entries: it groups under the longer one, apart from layer 0's
  model->add_adapter("list", lily({{"target_modules", {"q_proj", "layers.1.self_attn.q_proj"}}}));
  EXPECT_NE(weight_of(*model, q0, "lily_B", "list"), weight_of(*model, q1, "lily_B", "list"));
  model->delete_adapter("list");
  // a regex is one entry: q_proj and o_proj (both 64 -> 64) of both layers share layer 0's q_proj B
  model->add_adapter("regex", lily({{"target_modules", ".*\\.(q_proj|o_proj)"}}));
  for (const auto* path : {q1, o0, o1})
    EXPECT_EQ(weight_of(*model, q0, "lily_B", "regex"), weight_of(*model, path, "lily_B", "regex")) << path;
  EXPECT_NE(weight_of(*model, q0, "lily_A", "regex"), weight_of(*model, o0, "lily_A", "regex"));  // stride_A 1
}

TEST(Lily, TheRouterMixIsAveragedOverEveryTokenOfTheForward) {
  auto model = peft("llama");
  model->add_adapter("default", lily({{"init_weights", false}, {"scaling", 0.5}}));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.1.self_attn.v_proj.";
  at::Tensor a = state.at(p + "lily_A.weight"), b = state.at(p + "lily_B.weight"), router = state.at(p + "lily_router.weight");
  auto& layer = layer_at<LilyLayer>(*model, "model.layers.1.self_attn.v_proj");
  at::Tensor x = at::randn({2, 5, 64});
  at::Tensor hidden = at::matmul(x, a.t());
  at::Tensor mix = at::softmax(at::matmul(hidden, router.t()), -1).mean(at::IntArrayRef{0, 1});  // [3]
  at::Tensor combined = at::zeros({4, 32});
  for (int64_t e = 0; e < 3; ++e) combined += mix[e] * b.slice(0, e * 4, (e + 1) * 4);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + 0.5 * at::matmul(hidden, combined), 1e-4, 1e-5));
}

TEST(Lily, IdentityInitMergeAndMixedBatchesRefused) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", lily({}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "LILY");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "LILY");
}

TEST(Lily, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", lily(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"stride_A", 0}}), ErrorKind::InvalidArgument, "'stride_A'");
  expect_error(add({{"num_B", 1}}), ErrorKind::InvalidArgument, "'num_B'");
  expect_error(add({{"scaling", "high"}}), ErrorKind::InvalidArgument, "'scaling'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // PEFT's Lily wraps nn.Linear only
  expect_error([&] { gpt2->add_adapter("x", lily({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
