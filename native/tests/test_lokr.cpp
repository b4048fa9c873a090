// LoKr beyond the golden parity case: LyCORIS' factorisation, the factor shapes decompose_both and small ranks
// choose, PEFT's seeded initialisation, the three init modes, merge/unmerge, rank_dropout_scale and refused configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/lokr.h"
#include "peft4j/tuners/peft_model.h"
#include "golden_testing.h"

namespace {

using namespace golden_testing;

peft4j::models::ModelInputs batch() { return golden_testing::batch("lokr_llama"); }

at::Tensor logits(peft4j::models::Model& model) { return golden_testing::logits(model, batch()); }

nlohmann::json config(nlohmann::json changes = nlohmann::json::object()) {
  nlohmann::json c = {{"peft_type", "LOKR"}, {"r", 4}, {"alpha", 8}, {"target_modules", {"q_proj", "v_proj"}}};
  c.update(changes);
  return c;
}

std::map<std::string, std::vector<int64_t>> shapes(PeftModel& model, const std::string& prefix) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : model.named_parameters(true))
    if (p.key().rfind(prefix, 0) == 0 && p.key().find("lokr_") != std::string::npos)
      out[p.key().substr(prefix.size())] = p.value().sizes().vec();
  return out;
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

TEST(Lokr, FactorizationIsLycoris) {
  using peft4j::tuners::lokr_factorization;
  using P = std::pair<int64_t, int64_t>;
  // The examples of PEFT's docstring, plus a factor that does not divide and one larger than the root.
  EXPECT_EQ(lokr_factorization(256, -1), (P{16, 16}));
  EXPECT_EQ(lokr_factorization(128, -1), (P{8, 16}));
  EXPECT_EQ(lokr_factorization(127, -1), (P{1, 127}));
  EXPECT_EQ(lokr_factorization(128, 4), (P{4, 32}));
  EXPECT_EQ(lokr_factorization(96, 5), (P{4, 24}));
  EXPECT_EQ(lokr_factorization(128, 64), (P{64, 2}));  // a dividing factor is taken as is, unordered
  EXPECT_EQ(lokr_factorization(32, -1), (P{4, 8}));
}

TEST(Lokr, FactorShapesFollowRankAndDecomposeBoth) {
  // 64 = 8 x 8 and 32 = 4 x 8: r 4 keeps both factors full (4 >= 8 / 2), as in the golden case.
  auto full = peft("llama");
  full->add_adapter("default", config());
  EXPECT_EQ(shapes(*full, kV1), (std::map<std::string, std::vector<int64_t>>{{"lokr_w1.default", {4, 8}},
                                                                             {"lokr_w2.default", {8, 8}}}));
  // r 2 < 8 / 2 splits w2; decompose_both splits w1 too.
  auto low = peft("llama");
  low->add_adapter("default", config({{"r", 2}, {"decompose_both", true}}));
  EXPECT_EQ(shapes(*low, kV1), (std::map<std::string, std::vector<int64_t>>{{"lokr_w1_a.default", {4, 2}},
                                                                            {"lokr_w1_b.default", {2, 8}},
                                                                            {"lokr_w2_a.default", {8, 2}},
                                                                            {"lokr_w2_b.default", {2, 8}}}));
  // decompose_factor 2: 32 = 2 x 16, 64 = 2 x 32.
  auto factor = peft("llama");
  factor->add_adapter("default", config({{"decompose_factor", 2}, {"r", 1}}));
  EXPECT_EQ(shapes(*factor, kV1), (std::map<std::string, std::vector<int64_t>>{{"lokr_w1.default", {2, 2}},
                                                                               {"lokr_w2_a.default", {16, 1}},
                                                                               {"lokr_w2_b.default", {1, 32}}}));
}

TEST(Lokr, SeededRandomInitIsPefts) {
  // torch.manual_seed(0); get_peft_model(llama, LoKrConfig(r=2, target_modules=["q_proj", "v_proj"],
  // init_weights=False, decompose_both=True)) in PEFT 0.21; torch.rand(1) afterwards gives 0.66509604.
  auto model = peft("llama");
  at::manual_seed(0);
  model->add_adapter("default", config({{"r", 2}, {"decompose_both", true}, {"init_weights", false}}));
  at::Tensor w1_a = param(*model, kV1 + "lokr_w1_a.default").flatten();
  at::Tensor w2_b = param(*model, kV1 + "lokr_w2_b.default").flatten();
  EXPECT_NEAR(w1_a[0].item<double>(), 0.339769, 1e-6);
  EXPECT_NEAR(w1_a.sum().item<double>(), 1.11642, 1e-4);
  EXPECT_NEAR(w2_b[1].item<double>(), 0.175143, 1e-6);
  EXPECT_NEAR(w2_b.sum().item<double>(), -0.14259, 1e-4);
  EXPECT_NEAR(at::rand({1}).item<double>(), 0.66509604, 1e-7);
}

TEST(Lokr, DefaultAndLycorisInitAreTheIdentityRandomIsNot) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  for (const nlohmann::json& init : {nlohmann::json(true), nlohmann::json("lycoris")})
    for (int64_t r : {4, 1}) {
      model->add_adapter("x", config({{"init_weights", init}, {"r", r}, {"decompose_both", true}}));
      EXPECT_TRUE(at::equal(logits(*model), base)) << init << " r " << r;
      model->delete_adapter("x");
    }
  model->add_adapter("x", config({{"init_weights", false}}));
  EXPECT_FALSE(at::allclose(logits(*model), base, 1e-4, 1e-4));
}

TEST(Lokr, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  auto model = peft("llama");
  std::map<std::string, at::Tensor> before;
  for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
  model->load_adapter(kGolden + "/cases/lokr_llama/adapter", "default");
  at::Tensor adapted = logits(*model);
  model->merge();
  EXPECT_TRUE(at::allclose(logits(*model), adapted, 1e-4, 1e-5));
  // While merged, disabling unmerges and gives the base model.
  model->set_disabled(true);
  at::Tensor disabled = logits(*model);
  model->set_disabled(false);
  for (const auto& p : model->base_model().named_parameters()) {
    std::string key = p.key();
    if (key.find(".base_layer") != std::string::npos) key.erase(key.find(".base_layer"), 11);
    if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before.at(key), 1e-5, 1e-6)) << p.key();
  }
  EXPECT_TRUE(at::allclose(logits(*model), adapted, 1e-5, 1e-6));
  auto plain = peft("llama");
  EXPECT_TRUE(at::allclose(disabled, logits(*plain), 1e-5, 1e-6));
}

TEST(Lokr, RankDropoutRescalesOnlyWhenAsked) {
  torch::nn::Linear linear(16, 8);
  auto state = std::make_shared<peft4j::tuners::AdapterState>();
  at::Tensor x = at::randn({3, 16});
  at::NoGradGuard no_grad;
  for (bool scale : {false, true}) {
    auto layer = std::make_shared<peft4j::tuners::LokrLayer>(linear.ptr(), state);
    state->active = {"default"};
    layer->add("default", 1, 1, normalized(config({{"init_weights", false}, {"rank_dropout", 0.5}, {"rank_dropout_scale", scale}})),
               true);
    at::Tensor delta = at::linear(x, layer->delta_weight("default"));
    layer->train();
    at::manual_seed(5);
    at::Tensor dropped = layer->forward(x) - linear(x);
    int64_t kept = 0;
    for (int64_t j = 0; j < 8; ++j)
      if (dropped.select(1, j).abs().max().item<double>() > 1e-7) ++kept;
    ASSERT_GT(kept, 0);
    ASSERT_LT(kept, 8);
    double factor = scale ? 8.0 / kept : 1.0;
    for (int64_t j = 0; j < 8; ++j) {
      at::Tensor got = dropped.select(1, j);
      if (got.abs().max().item<double>() > 1e-7)
        EXPECT_TRUE(at::allclose(got, delta.select(1, j) * factor, 1e-4, 1e-6)) << "scale " << scale << " feature " << j;
    }
  }
}

TEST(Lokr, BadConfigsAreRefusedByField) {
  auto model = peft("llama");
  using peft4j::ErrorKind;
  expect_error([&] { model->add_adapter("x", config({{"decompose_factor", 0}})); }, ErrorKind::InvalidArgument,
               "'decompose_factor'");
  expect_error([&] { model->add_adapter("x", config({{"init_weights", "gaussian"}})); }, ErrorKind::InvalidArgument,
               "'init_weights'");
  expect_error([&] { model->add_adapter("x", config({{"decompose_both", "yes"}})); }, ErrorKind::InvalidArgument,
               "'decompose_both'");
  expect_error([&] { model->add_adapter("x", config({{"module_dropout", -0.1}})); }, ErrorKind::InvalidArgument,
               "'module_dropout'");
  expect_error([&] { model->add_adapter("x", config({{"alpha", "eight"}})); }, ErrorKind::InvalidArgument, "'alpha'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
