// RoAd beyond the golden case: the saved file, the three variants (the elementwise forward equals the rotation
// matrix merge uses), merge/unmerge with biases, identity init, mixed batches and refused configs.
#include "orthogonal_testing.h"
#include "peft4j/tuners/road.h"

namespace {

using namespace orthogonal_testing;
using peft4j::ErrorKind;
using peft4j::tuners::RoadLayer;

const std::string kCase = "road_llama";
const std::string kQ0 = "model.layers.0.self_attn.q_proj";

nlohmann::json road(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "ROAD"}, {"group_size", 16}, {"init_weights", false},
                           {"target_modules", {"q_proj", "v_proj", "o_proj"}}};
  if (extra.is_object()) config.update(extra);  // "{}" reads as null
  return config;
}

TEST(Road, SavedAdapterEqualsPeftsFile) { expect_saved_like_peft(kCase); }

TEST(Road, EveryVariantRotatesPairsAsItsMatrixDoes) {
  for (const auto& [variant, params] : std::vector<std::pair<std::string, int64_t>>{
           {"road_1", 32}, {"road_2", 64}, {"road_4", 128}}) {
    at::manual_seed(1);
    auto model = peft("llama");
    model->add_adapter("default", road({{"variant", variant}}));
    auto& q = layer_at<RoadLayer>(*model, kQ0);
    EXPECT_EQ(q.named_parameters(true)["road_theta.default"].numel(), params) << variant;
    at::NoGradGuard no_grad;
    at::Tensor h = at::randn({2, 5, 64});
    at::Tensor r = q.rotation_matrix("default");
    EXPECT_TRUE(at::allclose(q.apply(at::Tensor(), h, "default"), at::matmul(h, r.t()), 1e-5, 1e-5)) << variant;
    // Only pairs (j, j + 8) of each group of 16 mix.
    at::Tensor pairs = at::eye(64, at::kBool);
    for (int64_t g = 0; g < 64; g += 16)
      for (int64_t j = 0; j < 8; ++j) {
        pairs[g + j][g + j + 8].fill_(true);
        pairs[g + j + 8][g + j].fill_(true);
      }
    EXPECT_FALSE((r.abs() > 0).logical_and(pairs.logical_not()).any().item<bool>()) << variant;
  }
}

TEST(Road, Road1IsAScaledRotationPerPair) {
  at::manual_seed(2);
  auto model = peft("llama");
  model->add_adapter("default", road({}));
  auto& q = layer_at<RoadLayer>(*model, kQ0);
  auto params = q.named_parameters(true);
  at::NoGradGuard no_grad;
  at::Tensor r = q.rotation_matrix("default");
  at::Tensor alpha = params["road_alpha.default"].reshape({-1, 8}).repeat_interleave(2, 0).flatten();
  // R R^T = diag(α²) when each pair shares one angle and scale.
  EXPECT_TRUE(at::allclose(at::mm(r, r.t()), at::diag(alpha * alpha), 1e-5, 1e-5));
}

TEST(Road, MergeRotatesWeightAndBiasAndUnmergeRestoresThem) {
  for (const auto& [arch, config] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", road({})},
           {"llama", road({{"variant", "road_4"}, {"group_size", 32}})},
           {"qwen2", road({{"variant", "road_2"}, {"target_modules", {"q_proj", "k_proj", "v_proj"}}})}}) {
    at::manual_seed(3);
    auto model = peft(arch);
    auto before = base_weights(*model);
    auto in = batch(kCase);
    model->add_adapter("default", config);
    at::Tensor unmerged = logits(*model, in);
    model->merge();
    EXPECT_TRUE(at::allclose(logits(*model, in), unmerged, 1e-4, 1e-5)) << config.dump();
    model->unmerge();
    expect_base_restored(*model, before, 1e-4, 1e-5);
  }
}

TEST(Road, IdentityInitKeepsTheLogits) {
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", road({{"init_weights", true}, {"variant", "road_4"}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
}

TEST(Road, MixedBatchRoutesRowsToTheirAdapter) {
  at::manual_seed(4);
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  model->add_adapter("first", road({}));
  model->add_adapter("second", road({{"variant", "road_2"}, {"group_size", 32}}));
  at::Tensor first = logits(*model, in);
  model->set_adapter("second");
  at::Tensor second = logits(*model, in);
  at::NoGradGuard no_grad;
  at::Tensor mixed = model->forward_mixed(in, {"second", "first"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], second[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(mixed[1], first[1], 1e-5, 1e-5));
  mixed = model->forward_mixed(in, {"__base__", "second"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], base[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(mixed[1], second[1], 1e-5, 1e-5));
}

TEST(Road, BadConfigsAreRefusedByFieldName) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("a", road({{"variant", "road_3"}})); }, ErrorKind::InvalidArgument,
                 "'variant'");
  expect_error([&] { model->add_adapter("a", road({{"group_size", 7}})); }, ErrorKind::InvalidArgument,
                 "'group_size'");
  expect_error([&] { model->add_adapter("a", road({{"group_size", 128}})); }, ErrorKind::InvalidArgument,
                 "'group_size' (128) must divide out_features (64) of module 'model.layers.0.self_attn.q_proj'");
  expect_error([&] { model->add_adapter("a", road({{"init_weights", "yes"}})); }, ErrorKind::InvalidArgument,
                 "'init_weights'");
  expect_error([&] { model->add_adapter("a", road({{"target_modules", {"embed_tokens"}}})); },
                 ErrorKind::Unsupported, "embed_tokens");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
