// HRA beyond the golden case: the saved file, the reflections' algebra (orthogonal, reverse = inverse,
// Gram–Schmidt), the identity start, merge/unmerge, several adapters and refused configs.
#include "orthogonal_testing.h"
#include "peft4j/tuners/hra.h"
#include "peft4j/tuners/tuner.h"

namespace {

using namespace orthogonal_testing;
using peft4j::ErrorKind;
using peft4j::tuners::HraLayer;

const std::string kCase = "hra_llama";
const std::string kQ0 = "model.layers.0.self_attn.q_proj";

nlohmann::json hra(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "HRA"}, {"r", 4}, {"init_weights", false},
                           {"target_modules", {"q_proj", "v_proj"}}};
  if (extra.is_object()) config.update(extra);  // "{}" reads as null
  return config;
}

TEST(Hra, SavedAdapterEqualsPeftsFile) { expect_saved_like_peft(kCase); }

TEST(Hra, ReflectionsAreOrthogonalAndReverseOrderInvertsThem) {
  at::manual_seed(1);
  auto model = peft("llama");
  model->add_adapter("plain", hra({{"r", 5}}));
  model->add_adapter("gs", hra({{"r", 6}, {"apply_GS", true}}));
  auto& q = layer_at<HraLayer>(*model, kQ0);
  at::NoGradGuard no_grad;
  at::Tensor eye = at::eye(64);
  at::Tensor h = q.reflection("plain");
  EXPECT_TRUE(at::allclose(at::mm(h, h.t()), eye, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(at::mm(h, q.reflection("plain", /*reverse=*/true)), eye, 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(h, h.t(), 1e-3, 1e-3));  // a product of distinct reflections is no reflection
  // Gram–Schmidt: I - 2 U U^T with orthonormal U, a symmetric involution of trace 64 - 2r.
  at::Tensor g = q.reflection("gs");
  EXPECT_TRUE(at::allclose(g, g.t(), 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(at::mm(g, g), eye, 1e-5, 1e-5));
  EXPECT_NEAR(g.trace().item<double>(), 64 - 2 * 6, 1e-4);
}

TEST(Hra, IdentityStartNeedsAnEvenRank) {
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  const auto& tuner = peft4j::tuners::tuner_for("HRA");
  ASSERT_TRUE(tuner.identity_config(hra({})).has_value());
  model->add_adapter("even", *tuner.identity_config(hra({})));
  EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-5, 1e-6));
  // an odd rank cannot pair its reflections: PEFT draws them at random, and no identity config exists
  EXPECT_FALSE(tuner.identity_config(hra({{"r", 3}})).has_value());
  model->add_adapter("odd", hra({{"r", 3}, {"init_weights", true}}));
  model->set_adapter("odd");
  EXPECT_FALSE(at::allclose(logits(*model, in), base, 1e-3, 1e-3));
  EXPECT_EQ(model->trainable_parameter_count(), 2 * 2 * 64 * 3);
}

TEST(Hra, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  for (const auto& config : {hra({}), hra({{"r", 6}, {"apply_GS", true}}),
                             hra({{"target_modules", {"q_proj", "k_proj", "down_proj"}}})}) {
    at::manual_seed(2);
    auto model = peft("llama");
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

TEST(Hra, ActiveAdaptersChainTheirReflectionsAndMixedBatchesRouteRows) {
  at::manual_seed(3);
  auto model = peft("qwen2");  // q_proj has a bias
  model->add_adapter("first", hra({}));
  model->add_adapter("second", hra({{"r", 2}, {"apply_GS", true}}));
  auto& q = layer_at<HraLayer>(*model, kQ0);
  auto params = q.base_layer()->named_parameters(false);
  at::Tensor x = at::randn({3, 64});
  model->set_active_adapters({"first", "second"});
  at::NoGradGuard no_grad;
  at::Tensor weight = at::mm(at::mm(params["weight"], q.reflection("first")), q.reflection("second"));
  EXPECT_TRUE(at::allclose(q.forward(x), at::linear(x, weight, params["bias"]), 1e-5, 1e-5));
  model->set_adapter("first");
  auto in = batch(kCase);
  at::Tensor adapted = logits(*model, in);
  model->set_disabled(true);
  at::Tensor base = logits(*model, in);
  model->set_disabled(false);
  at::Tensor mixed = model->forward_mixed(in, {"first", "__base__"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], adapted[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(mixed[1], base[1], 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(adapted, base, 1e-3, 1e-3));
}

TEST(Hra, BadConfigsAreRefusedByFieldName) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("a", hra({{"r", 0}})); }, ErrorKind::InvalidArgument, "'r'");
  expect_error([&] { model->add_adapter("a", hra({{"bias", "boft_only"}})); }, ErrorKind::InvalidArgument, "'bias'");
  expect_error([&] { model->add_adapter("a", hra({{"target_modules", ".*q_proj"}, {"layers_to_transform", 0}})); },
                 ErrorKind::InvalidArgument, "'layers_to_transform'");
  expect_error([&] { model->add_adapter("a", hra({{"apply_GS", 1}})); }, ErrorKind::InvalidArgument, "'apply_GS'");
  expect_error([&] { model->add_adapter("a", hra({{"target_modules", {"embed_tokens"}}})); }, ErrorKind::Unsupported,
                 "embed_tokens");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
