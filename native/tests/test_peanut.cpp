// PEANuT beyond the parity run: ΔW recomputed from the saved weights and the base weight with plain tensor ops
// (encoders, decoders and skip connections), PEFT's keys (the adapter name dropped before the layer index), merging
// from the weight before the first merge and unmerging by restoring it, identity init, refusals.
#include "linear_target_testing.h"
#include "peft4j/tuners/peanut.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json peanut(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "PEANUT"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}},
                           {"init_weights", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Peanut, SavesPeftsKeysAndShapes) {
  // PEFT 0.21's keys for PeanutConfig(r=4, depth=2, target_modules=["v_proj"]) on this llama (v_proj: 64 -> 32).
  auto model = peft("llama");
  model->add_adapter("default", peanut({{"depth", 2}, {"target_modules", {"v_proj"}}}));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.0.self_attn.v_proj.";
  std::map<std::string, std::vector<int64_t>> want = {
      {"peanut_A.weight", {4, 32}},           {"peanut_B.weight", {32, 4}},
      {"peanut_encoders.0.weight", {4, 4}},   {"peanut_encoders.1.weight", {4, 4}},
      {"peanut_decoders.0.weight", {4, 4}},   {"peanut_decoders.1.weight", {4, 4}}};
  EXPECT_EQ(state.size(), 2 * want.size());
  for (const auto& [key, shape] : want) {
    ASSERT_TRUE(state.count(p + key)) << key;
    EXPECT_EQ(state.at(p + key).sizes(), shape) << key;
  }
  EXPECT_EQ(model->trainable_parameter_count(), 640);  // PEFT's count for this config
  // and the adapter loads back under those keys
  std::string dir = temp_dir("peanut_keys");
  model->save_adapter(dir, "default");
  auto fresh = peft("llama");
  fresh->load_adapter(dir, "default");
  auto again = fresh->adapter_state_dict("default");
  for (const auto& [key, t] : state) EXPECT_TRUE(at::equal(again.at(key), t)) << key;
}

TEST(Peanut, DeltaWeightIsTheWeightAwareNetwork) {
  auto model = peft("llama");
  model->add_adapter("default", peanut({{"depth", 2}, {"act_fn", "gelu"}, {"scaling", 0.5}}));
  auto state = model->adapter_state_dict("default");
  auto& layer = layer_at<peft4j::tuners::PeanutLayer>(*model, "model.layers.1.self_attn.v_proj");
  const std::string p = "base_model.model.model.layers.1.self_attn.v_proj.";
  auto w = [&](const std::string& k) { return state.at(p + k); };
  at::Tensor weight = peft4j::tuners::linear_weight(*layer.base_layer());  // [32, 64]
  at::Tensor z0 = at::gelu(at::mm(weight.t(), w("peanut_A.weight").t()));
  at::Tensor z1 = at::gelu(at::mm(z0, w("peanut_encoders.0.weight").t()));
  at::Tensor z2 = at::gelu(at::mm(z1, w("peanut_encoders.1.weight").t()));
  at::Tensor d0 = at::gelu(at::mm(z2, w("peanut_decoders.0.weight").t())) + z1;
  at::Tensor d1 = at::gelu(at::mm(d0, w("peanut_decoders.1.weight").t())) + z0;
  at::Tensor delta = (at::mm(d1, w("peanut_B.weight").t()) * 0.5).t();
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta, 1e-5, 1e-6));
  at::Tensor x = at::randn({2, 5, 64});
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::matmul(x, delta.t()), 1e-5, 1e-5));
}

TEST(Peanut, MergeUsesTheWeightBeforeTheFirstMergeAndUnmergeRestoresIt) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("a", peanut({{"depth", 1}}));
  model->add_adapter("b", peanut({{"act_fn", "silu"}}));
  model->set_active_adapters({"a", "b"});
  auto& layer = layer_at<peft4j::tuners::PeanutLayer>(*model, "model.layers.0.self_attn.q_proj");
  at::Tensor w0 = before.at("model.layers.0.self_attn.q_proj.weight");
  at::Tensor expected = w0 + layer.delta_from("a", w0) + layer.delta_from("b", w0);
  expect_merge_round_trip(*model, before, in, "peanut");
  model->merge();
  EXPECT_TRUE(at::allclose(peft4j::tuners::linear_weight(*layer.base_layer()), expected, 1e-6, 1e-6));
  model->unmerge();
  EXPECT_TRUE(at::equal(peft4j::tuners::linear_weight(*layer.base_layer()), w0));  // restored, not subtracted
  expect_mixed_batch_refused(*model, {"a", "__base__"}, in, "PEANUT");
}

TEST(Peanut, IdentityInit) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", peanut({{"init_weights", true}, {"depth", 3}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
}

TEST(Peanut, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", peanut(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"depth", -1}}), ErrorKind::InvalidArgument, "'depth'");
  expect_error(add({{"act_fn", "softsign"}}), ErrorKind::Unsupported, "'act_fn'");
  expect_error(add({{"act_fn", "prelu"}}), ErrorKind::Unsupported, "'act_fn'");  // an activation with weights
  expect_error(add({{"layers_pattern", "layers"}}), ErrorKind::InvalidArgument, "layers_to_transform");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // Conv1D is not a PEANuT target (PEFT takes nn.Linear only)
  expect_error([&] { gpt2->add_adapter("x", peanut({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
