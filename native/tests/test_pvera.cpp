// PVeRA beyond the parity run: the projections are PEFT's VeRA recipe with 2r rows in A, the forward is the mean in
// eval mode and a sample from the adapter's own seeded generator in training (recomputed here from the weights),
// PEFT's saved keys, merge on Linear and Conv1D, identity init, several adapters, refused options.
#include <ATen/CPUGeneratorImpl.h>

#include "linear_target_testing.h"
#include "peft4j/tuners/pvera.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::PveraLayer;

nlohmann::json pvera(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "PVERA"}, {"r", 4}, {"target_modules", {"q_proj", "o_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Pvera, ProjectionsFollowPeftsVeraRecipeWithTwiceTheRowsInA) {
  // PEFT draws pvera_A [2r, in] then pvera_B [out, r] from one generator seeded with projection_prng_key, as VeRA
  // draws vera_A [r, in] then vera_B: with r = 4 here and 8 in the golden VeRA case, A is VeRA's A bit for bit and
  // B holds the first half of VeRA's draws, on the kaiming bound of fan_in 4 instead of 8 (√2 larger).
  auto model = peft("llama");
  model->add_adapter("default", pvera({}));
  auto ours = model->adapter_state_dict("default");
  auto vera = golden_tensors("vera_llama");
  EXPECT_TRUE(at::equal(ours.at("base_model.pvera_A"), vera.at("base_model.vera_A")));
  at::Tensor b = ours.at("base_model.pvera_B");
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{64, 4}));
  at::Tensor first_draws = vera.at("base_model.vera_B").reshape({-1}).slice(0, 0, 256).reshape({64, 4});
  EXPECT_TRUE(at::allclose(b, first_draws * std::sqrt(2.0), 1e-6, 1e-7));
}

TEST(Pvera, SavesPeftsKeysAndShapes) {
  // PEFT 0.21 saved these for PveraConfig(r=8, target_modules=["q_proj", "o_proj"]) on the golden llama.
  auto model = peft("llama");
  model->add_adapter("default", pvera({{"r", 8}}));
  std::string out = temp_dir("pvera_keys");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  std::map<std::string, std::vector<int64_t>> want = {{"base_model.pvera_A", {16, 64}}, {"base_model.pvera_B", {64, 8}}};
  for (const std::string layer : {"0", "1"})
    for (const std::string proj : {"q_proj", "o_proj"}) {
      std::string prefix = "base_model.model.model.layers." + layer + ".self_attn." + proj + ".pvera_lambda_";
      want[prefix + "b"] = {64};
      want[prefix + "d"] = {16};
    }
  ASSERT_EQ(saved.size(), want.size());
  for (const auto& [key, shape] : want) {
    ASSERT_TRUE(saved.count(key)) << key;
    EXPECT_EQ(saved.at(key).sizes(), shape) << key;
  }
  auto config = peft4j::io::read_json_file(out + "/adapter_config.json");
  EXPECT_EQ(config["sample_at_inference"], false);
  EXPECT_TRUE(config["generator_seed"].is_null());
}

// One layer's output recomputed from its tensors: λ_b ⊙ (B z) with z = μ, or μ + ε exp(logvar / 2).
at::Tensor recomputed(const std::map<std::string, at::Tensor>& t, const std::string& layer, const at::Tensor& x,
                      const at::Tensor& base, int64_t r, const at::Tensor& eps) {
  at::Tensor a = t.at("base_model.pvera_A");
  at::Tensor b = t.at("base_model.pvera_B");
  at::Tensor lambda_d = t.at("base_model.model." + layer + ".pvera_lambda_d");
  at::Tensor lambda_b = t.at("base_model.model." + layer + ".pvera_lambda_b");
  at::Tensor h = at::matmul(x, a.t()) * lambda_d;
  at::Tensor z = h.slice(-1, 0, r);
  if (eps.defined()) z = z + eps * at::exp(0.5 * h.slice(-1, r, 2 * r));
  return base + lambda_b * at::matmul(z, b.t());
}

TEST(Pvera, EvalUsesTheMeanAndTrainingSamplesFromTheSeededGenerator) {
  auto model = peft("llama");
  model->add_adapter("default", pvera({{"init_weights", false}, {"generator_seed", 11}}));
  const std::string key = "model.layers.0.self_attn.q_proj";
  auto& layer = layer_at<PveraLayer>(*model, key);
  auto tensors = model->adapter_state_dict("default");
  at::manual_seed(3);
  at::Tensor x = at::randn({2, 5, 64});
  at::Tensor base = layer.base_forward(x);
  at::NoGradGuard no_grad;
  layer.eval();
  EXPECT_TRUE(at::allclose(layer.forward(x), recomputed(tensors, key, x, base, 4, at::Tensor()), 1e-5, 1e-6));
  layer.train();
  auto generator = at::make_generator<at::CPUGeneratorImpl>(11);
  at::Tensor first = layer.forward(x), second = layer.forward(x);
  at::Tensor eps1 = at::randn({2, 5, 4}, generator), eps2 = at::randn({2, 5, 4}, generator);
  EXPECT_TRUE(at::allclose(first, recomputed(tensors, key, x, base, 4, eps1), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(second, recomputed(tensors, key, x, base, 4, eps2), 1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(first, second));
}

TEST(Pvera, SampleAtInferenceSamplesInEvalMode) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("default", pvera({{"init_weights", false}, {"sample_at_inference", true}}));
  at::Tensor once = logits(*model, in);
  EXPECT_FALSE(at::allclose(logits(*model, in), once));
}

TEST(Pvera, SaveProjectionFalseLeavesProjectionsOutAndRegeneratesThem) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("default", pvera({{"save_projection", false}, {"init_weights", false}, {"projection_prng_key", 5}}));
  std::string out = temp_dir("pvera_noproj");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 8u);
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), logits(*model, in)));
}

TEST(Pvera, MergeFoldsTheMeanOnLinearAndConv1D) {
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "c_proj"}}}) {
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->add_adapter("default", pvera({{"target_modules", targets}, {"init_weights", false}}));
    expect_merge_round_trip(*model, before, batch(arch == "llama" ? "vera_llama" : "lora_gpt2"), "pvera " + arch);
  }
}

TEST(Pvera, IdentityInitLeavesTheModelUnchangedEvenWhenSampling) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", pvera({{"sample_at_inference", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  EXPECT_EQ(model->trainable_parameter_count(), 4 * (64 + 8));  // λ_b [out] + λ_d [2r] on 2 × (q, o)
}

TEST(Pvera, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", pvera(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"bias", "pvera_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"pvera_dropout", 1.0}}), ErrorKind::InvalidArgument, "'pvera_dropout'");
  expect_error(add({{"sample_at_inference", 1}}), ErrorKind::InvalidArgument, "'sample_at_inference'");
  expect_error(add({{"generator_seed", "x"}}), ErrorKind::InvalidArgument, "'generator_seed'");
  expect_error(add({{"layers_pattern", "layers"}}), ErrorKind::InvalidArgument, "'layers_pattern'");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(Pvera, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", pvera({{"init_weights", false}}));
  model->add_adapter("b", pvera({{"init_weights", false}, {"r", 2}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "PVERA");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
  EXPECT_EQ(model->adapter_state_dict("b").at("base_model.pvera_A").size(0), 4);  // 2 × b's own rank
}

}  // namespace
