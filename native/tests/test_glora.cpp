// GLoRA beyond the parity run: the layer output recomputed as linear(x, W + W ⊙ A + B, b + b ⊙ D + E + W C) from the
// saved paths for each path kind, PEFT's saved keys (frozen "zeros" included), mixed batches routed per row, merge
// and unmerge with several adapters, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/glora.h"
#include "peft4j/tuners/linear_target.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::GloraLayer;

nlohmann::json glora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "GLORA"}, {"r", 4}, {"target_modules", {"query", "value"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

// A path's value from the saved tensors under `prefix` ("...glora_A").
at::Tensor path(const peft4j::io::TensorMap& t, const std::string& prefix) {
  if (t.count(prefix + ".Xd")) return at::matmul(t.at(prefix + ".Xd"), t.at(prefix + ".Xu"));
  if (t.count(prefix + ".zeros")) return t.at(prefix + ".zeros");
  at::Tensor x = t.at(prefix + ".X");
  return x.numel() == 1 && x.dim() == 1 ? x[0] : x;
}

TEST(Glora, LayerOutputUsesTheEffectiveWeightAndBiasForEveryPathKind) {
  for (const auto& [ab, c, de] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"lora", "lora", "constant"}, {"vector", "vector", "vector"}, {"constant", "none", "none"}}) {
    auto model = peft("bert");
    model->add_adapter("default",
                       glora({{"init_weights", false}, {"config_A_B", ab}, {"config_C", c}, {"config_D_E", de}}));
    const std::string key = "bert.encoder.layer.1.attention.self.query";
    auto& layer = layer_at<GloraLayer>(*model, key);
    auto t = model->adapter_state_dict("default");
    const std::string p = "base_model.model." + key + ".glora_";
    at::Tensor W = peft4j::tuners::linear_weight(*layer.base_layer());
    at::Tensor b = peft4j::tuners::linear_bias(*layer.base_layer());
    at::Tensor W_eff = W + W * path(t, p + "A") + path(t, p + "B");
    at::Tensor b_eff = b + b * path(t, p + "D") + path(t, p + "E") + at::matmul(W, path(t, p + "C")).squeeze(-1);
    at::manual_seed(5);
    at::Tensor x = at::randn({2, 3, 64});
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(layer.forward(x), at::linear(x, W_eff, b_eff), 1e-4, 1e-5)) << ab << c << de;
  }
}

TEST(Glora, SavesPeftsKeysIncludingTheFrozenZeros) {
  // PEFT 0.21 saved these for GloraConfig(r=4, target_modules=["q_proj"]) on the golden llama (no bias: C, D and E
  // are its frozen zero buffers), and counted 2048 trainable parameters.
  auto model = peft("llama");
  model->add_adapter("default", glora({{"target_modules", {"q_proj"}}}));
  auto saved = model->adapter_state_dict("default");
  std::map<std::string, std::vector<int64_t>> want;
  for (const std::string layer : {"0", "1"}) {
    std::string p = "base_model.model.model.layers." + layer + ".self_attn.q_proj.glora_";
    want[p + "A.Xd"] = {64, 4};
    want[p + "A.Xu"] = {4, 64};
    want[p + "B.Xd"] = {64, 4};
    want[p + "B.Xu"] = {4, 64};
    want[p + "C.zeros"] = {64, 1};
    want[p + "D.zeros"] = {64};
    want[p + "E.zeros"] = {64};
  }
  ASSERT_EQ(saved.size(), want.size());
  for (const auto& [key, shape] : want) {
    ASSERT_TRUE(saved.count(key)) << key;
    EXPECT_EQ(saved.at(key).sizes(), shape) << key;
  }
  EXPECT_EQ(model->trainable_parameter_count(), 2048);
}

TEST(Glora, IdentityInitLeavesTheModelUnchanged) {
  auto in = batch("lora_bert_seqcls");
  auto model = peft("bert");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", glora({}));
  EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-5, 1e-6));
}

TEST(Glora, MixedBatchRoutesEachRowToItsAdapter) {
  auto in = batch("lora_bert_seqcls");
  auto model = peft("bert");
  model->add_adapter("a", glora({{"init_weights", false}}));
  model->add_adapter("b", glora({{"init_weights", false}, {"config_A_B", "vector"}}));
  std::map<std::string, at::Tensor> alone;
  for (const std::string name : {"a", "b"}) {
    model->set_adapter(name);
    alone[name] = logits(*model, in);
  }
  model->set_disabled(true);
  alone["__base__"] = logits(*model, in);
  model->set_disabled(false);
  at::NoGradGuard no_grad;
  model->eval();
  at::Tensor mixed = model->forward_mixed(in, {"b", "__base__"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], alone["b"][0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(mixed[1], alone["__base__"][1], 1e-5, 1e-5));
}

TEST(Glora, MergeAndUnmergeWithOneAndTwoAdapters) {
  auto in = batch("lora_bert_seqcls");
  auto model = peft("bert");
  auto before = base_weights(*model);
  model->add_adapter("a", glora({{"init_weights", false}, {"config_D_E", "vector"}}));
  expect_merge_round_trip(*model, before, in, "glora a");
  model->add_adapter("b", glora({{"init_weights", false}, {"config_A_B", "constant"}, {"config_C", "vector"}}));
  model->set_active_adapters({"a", "b"});
  expect_merge_round_trip(*model, before, in, "glora a+b");
}

TEST(Glora, RefusesBadOptionsNamingTheField) {
  auto model = peft("bert");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", glora(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"config_A_B", "full"}}), ErrorKind::InvalidArgument, "'config_A_B'");
  expect_error(add({{"config_C", "constant"}}), ErrorKind::InvalidArgument, "'config_C'");
  expect_error(add({{"config_D_E", "lora"}}), ErrorKind::InvalidArgument, "'config_D_E'");
  expect_error(add({{"bias", "glora_only"}}), ErrorKind::Unsupported, "'bias'");
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", glora({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "GLORA");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
