// LoHa beyond the golden parity case: PEFT's seeded initialisation, merge/unmerge, identity init, rank and alpha
// patterns, several adapters, the training-only dropouts and refused configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/loha.h"
#include "peft4j/tuners/peft_model.h"
#include "golden_testing.h"

namespace {

using namespace golden_testing;

peft4j::models::ModelInputs batch() { return golden_testing::batch("loha_llama"); }

at::Tensor logits(peft4j::models::Model& model) { return golden_testing::logits(model, batch()); }

nlohmann::json config(nlohmann::json changes = nlohmann::json::object()) {
  nlohmann::json c = {{"peft_type", "LOHA"}, {"r", 4}, {"alpha", 8}, {"target_modules", {"q_proj", "v_proj"}}};
  c.update(changes);
  return c;
}

// A layer built by hand reads its adapter's config as the tuner hands it over: with the method's defaults filled.
nlohmann::json normalized(const nlohmann::json& c) {
  return peft4j::tuners::tuner_for(c["peft_type"].get<std::string>()).normalize_config(c);
}

at::Tensor param(PeftModel& model, const std::string& name) {
  auto params = model.named_parameters(true);
  const auto* p = params.find(name);
  if (!p) ADD_FAILURE() << "no parameter " << name;
  return p ? p->detach() : at::Tensor();
}

const std::string kV1 = "base_model.model.model.layers.1.self_attn.v_proj.";

TEST(Loha, SeededRandomInitIsPeftsAndLeavesTheGeneratorWherePeftDoes) {
  // torch.manual_seed(0); get_peft_model(llama, LoHaConfig(r=4, target_modules=["q_proj", "v_proj"],
  // init_weights=False)) in PEFT 0.21 gives these values; torch.rand(1) afterwards gives 0.10995042.
  auto model = peft("llama");
  at::manual_seed(0);
  model->add_adapter("default", config({{"init_weights", false}}));
  at::Tensor w2_b = param(*model, kV1 + "hada_w2_b.default").flatten();
  at::Tensor w1_a = param(*model, kV1 + "hada_w1_a.default").flatten();
  EXPECT_NEAR(w2_b[0].item<double>(), -0.092592, 1e-6);
  EXPECT_NEAR(w2_b[2].item<double>(), 0.058773, 1e-6);
  EXPECT_NEAR(w2_b.sum().item<double>(), -3.08503, 1e-4);
  EXPECT_NEAR(w1_a[0].item<double>(), -0.448756, 1e-6);
  EXPECT_NEAR(w1_a.sum().item<double>(), -0.27008, 1e-4);
  EXPECT_NEAR(at::rand({1}).item<double>(), 0.10995042, 1e-7);
}

TEST(Loha, IdentityInitLeavesLogitsAndCountsParameters) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  model->add_adapter("default", config());
  EXPECT_TRUE(at::equal(logits(*model), base));
  EXPECT_TRUE(at::equal(param(*model, kV1 + "hada_w2_b.default"), at::zeros({4, 64})));
  // Two layers x (q: 2x(64x4 + 4x64), v: 2x(32x4 + 4x64)), as the golden case's trainable_params.
  EXPECT_EQ(model->trainable_parameter_count(), 3584);
}

TEST(Loha, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  auto model = peft("llama");
  std::map<std::string, at::Tensor> before;
  for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
  model->load_adapter(kGolden + "/cases/loha_llama/adapter", "default");
  at::Tensor adapted = logits(*model);
  model->merge();
  EXPECT_TRUE(at::allclose(logits(*model), adapted, 1e-4, 1e-5));
  at::Tensor merged_q = param(*model, "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight");
  EXPECT_FALSE(at::allclose(merged_q, before.at("model.layers.0.self_attn.q_proj.weight")));
  model->unmerge();
  for (const auto& p : model->base_model().named_parameters()) {
    std::string key = p.key();
    if (key.find(".base_layer") != std::string::npos) key.erase(key.find(".base_layer"), 11);
    if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before.at(key), 1e-5, 1e-6)) << p.key();
  }
  EXPECT_TRUE(at::allclose(logits(*model), adapted, 1e-5, 1e-6));
}

TEST(Loha, RankAndAlphaPatternsApplyPerModule) {
  auto model = peft("llama");
  model->add_adapter("default", config({{"rank_pattern", {{"v_proj", 2}}}, {"alpha_pattern", {{"q_proj", 3}}}}));
  EXPECT_EQ(param(*model, kV1 + "hada_w1_a.default").sizes(), (at::IntArrayRef{32, 2}));
  EXPECT_EQ(param(*model, "base_model.model.model.layers.1.self_attn.q_proj.hada_w1_a.default").sizes(),
            (at::IntArrayRef{64, 4}));
  auto modules = model->base_model().named_modules("", false);
  auto* v = dynamic_cast<peft4j::tuners::LohaLayer*>(modules["model.layers.1.self_attn.v_proj"].get());
  auto* q = dynamic_cast<peft4j::tuners::LohaLayer*>(modules["model.layers.1.self_attn.q_proj"].get());
  ASSERT_TRUE(v && q);
  EXPECT_DOUBLE_EQ(v->scaling("default"), 8.0 / 2);
  EXPECT_DOUBLE_EQ(q->scaling("default"), 3.0 / 4);
}

TEST(Loha, TwoActiveAdaptersAddTheirDeltasAndMixedBatchesRouteRows) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  at::manual_seed(1);
  model->add_adapter("a", config({{"init_weights", false}}));
  model->add_adapter("b", config({{"init_weights", false}, {"target_modules", {"v_proj"}}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model);
  model->set_adapter("b");
  at::Tensor b = logits(*model);
  model->set_active_adapters({"a", "b"});
  at::Tensor both = logits(*model);
  EXPECT_FALSE(at::allclose(both, a, 1e-4, 1e-4));
  EXPECT_FALSE(at::allclose(both, b, 1e-4, 1e-4));

  // Merging both equals running both.
  model->merge();
  EXPECT_TRUE(at::allclose(logits(*model), both, 1e-4, 1e-5));
  model->unmerge();

  at::NoGradGuard no_grad;
  auto out = model->forward_mixed(batch(), {"b", "__base__"}).logits;
  EXPECT_TRUE(at::allclose(out[0], b[0], 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(out[1], base[1], 1e-5, 1e-6));
}

TEST(Loha, DropoutsActInTrainingOnly) {
  torch::nn::Linear linear(16, 8);
  auto state = std::make_shared<peft4j::tuners::AdapterState>();
  state->active = {"default"};
  auto layer = std::make_shared<peft4j::tuners::LohaLayer>(linear.ptr(), state);
  layer->add("default", 4, 4, normalized(config({{"init_weights", false}, {"rank_dropout", 0.5}})), true);
  at::Tensor x = at::randn({3, 16});
  at::NoGradGuard no_grad;
  layer->eval();
  at::Tensor delta = layer->forward(x) - linear(x);
  EXPECT_TRUE(at::allclose(delta, at::linear(x, layer->delta_weight("default")), 1e-5, 1e-6));
  // In training whole output features are dropped and the kept ones rescaled by 1 / (kept fraction).
  layer->train();
  at::manual_seed(3);
  at::Tensor dropped = layer->forward(x) - linear(x);
  int64_t kept = 0;
  double factor = 0;
  for (int64_t j = 0; j < 8; ++j) {
    if (dropped.select(1, j).abs().max().item<double>() < 1e-7) continue;
    ++kept;
    factor = (dropped.select(1, j) / delta.select(1, j)).mean().item<double>();
    EXPECT_TRUE(at::allclose(dropped.select(1, j), delta.select(1, j) * factor, 1e-4, 1e-6)) << "feature " << j;
  }
  ASSERT_GT(kept, 0);
  ASSERT_LT(kept, 8);
  EXPECT_NEAR(factor, 8.0 / kept, 1e-4);

  // module_dropout 1 drops the whole adapter in training, never in evaluation.
  layer->add("off", 4, 4, normalized(config({{"init_weights", false}, {"module_dropout", 1.0}})), true);
  state->active = {"off"};
  EXPECT_TRUE(at::equal(layer->forward(x), linear(x)));
  layer->eval();
  EXPECT_FALSE(at::allclose(layer->forward(x), linear(x), 1e-4, 1e-4));
}

TEST(Loha, BadConfigsAreRefusedByFieldAndLeaveTheModelUnchanged) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  using peft4j::ErrorKind;
  expect_error([&] { model->add_adapter("x", config({{"r", 0}})); }, ErrorKind::InvalidArgument, "'r'");
  expect_error([&] { model->add_adapter("x", config({{"rank_dropout", 1.5}})); }, ErrorKind::InvalidArgument,
               "'rank_dropout'");
  expect_error([&] { model->add_adapter("x", config({{"init_weights", "lycoris"}})); }, ErrorKind::InvalidArgument,
               "'init_weights'");
  expect_error([&] { model->add_adapter("x", config({{"rank_pattern", {{"v_proj", "two"}}}})); },
               ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error([&] { model->add_adapter("x", config({{"layers_pattern", "layers"}})); },
               ErrorKind::InvalidArgument, "'layers_pattern'");
  expect_error([&] { model->add_adapter("x", config({{"target_modules", nullptr}})); }, ErrorKind::InvalidArgument,
               "'target_modules'");
  expect_error([&] { model->add_adapter("x", config({{"target_modules", {"input_layernorm"}}})); },
               ErrorKind::Unsupported, "model.layers.0.input_layernorm");
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_TRUE(at::equal(logits(*model), base));

  // GPT-2's projections are Conv1D, which PEFT's LoHa does not wrap either.
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", config({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "Conv1D");
}

TEST(Loha, SavedConfigCarriesEveryPeftField) {
  auto model = peft("llama");
  model->add_adapter("default", config());
  std::string dir = ::testing::TempDir() + "peft4j_loha_config_" + std::to_string(::getpid());
  model->save_adapter(dir, "default");
  auto saved = peft4j::io::read_json_file(dir + "/adapter_config.json");
  auto golden = peft4j::io::read_json_file(kGolden + "/cases/loha_llama/adapter/adapter_config.json");
  for (auto it = golden.begin(); it != golden.end(); ++it)
    if (it.key() != "peft_version") EXPECT_TRUE(saved.contains(it.key())) << it.key();
  EXPECT_EQ(saved["init_weights"], true);
  EXPECT_EQ(saved["inference_mode"], true);
}

}  // namespace
