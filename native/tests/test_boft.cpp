// BOFT beyond the golden case: the saved file, butterfly factors (orthogonal, mixing across blocks), the output
// scale around the bias, merge/unmerge, block dropout and refused configs.
#include "orthogonal_testing.h"
#include "peft4j/tuners/boft.h"

namespace {

using namespace orthogonal_testing;
using peft4j::ErrorKind;
using peft4j::tuners::BoftLayer;

const std::string kCase = "boft_llama";
const std::string kQ0 = "model.layers.0.self_attn.q_proj";

nlohmann::json boft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "BOFT"}, {"boft_block_size", 8}, {"init_weights", false},
                           {"target_modules", {"q_proj", "v_proj"}}};
  if (extra.is_object()) config.update(extra);  // "{}" reads as null
  return config;
}

TEST(Boft, SavedAdapterEqualsPeftsFile) { expect_saved_like_peft(kCase); }

TEST(Boft, ButterflyFactorsAreOrthogonalAndMixBlocks) {
  at::manual_seed(1);
  auto model = peft("llama");
  model->add_adapter("one", boft({{"boft_block_size", 4}}));
  model->add_adapter("three", boft({{"boft_block_size", 4}, {"boft_n_butterfly_factor", 3}}));
  auto& q = layer_at<BoftLayer>(*model, kQ0);
  EXPECT_EQ(q.named_parameters(true)["boft_R.three"].sizes(), at::IntArrayRef({3, 16, 4, 4}));
  at::NoGradGuard no_grad;
  for (const std::string adapter : {"one", "three"}) {
    at::Tensor m = q.butterfly_matrix(adapter);
    EXPECT_TRUE(at::allclose(at::mm(m, m.t()), at::eye(64), 1e-5, 1e-5)) << adapter;
  }
  // One factor is block diagonal (4 x 4 blocks); three factors couple features 4 x 2^2 = 16 apart at most.
  at::Tensor one = q.butterfly_matrix("one").abs() > 1e-7;
  at::Tensor three = q.butterfly_matrix("three").abs() > 1e-7;
  at::Tensor block = at::block_diag(std::vector<at::Tensor>(16, at::ones({4, 4}))) > 0;
  at::Tensor wide = at::block_diag(std::vector<at::Tensor>(4, at::ones({16, 16}))) > 0;
  EXPECT_TRUE(at::equal(one.logical_and(block.logical_not()).any(), at::scalar_tensor(false)));
  EXPECT_TRUE(three.logical_and(block.logical_not()).any().item<bool>());
  EXPECT_FALSE(three.logical_and(wide.logical_not()).any().item<bool>());
}

TEST(Boft, ScaleActsOnTheOutputWithoutTheBias) {
  at::manual_seed(2);
  auto model = peft("qwen2");  // q_proj has a bias
  model->add_adapter("default", boft({{"target_modules", {"q_proj"}}}));
  auto& q = layer_at<BoftLayer>(*model, kQ0);
  auto params = q.base_layer()->named_parameters(false);
  at::Tensor x = at::randn({2, 64});
  at::NoGradGuard no_grad;
  at::Tensor expected = at::matmul(at::matmul(x, q.butterfly_matrix("default")), params["weight"].t()) *
                            q.scale("default").squeeze(-1) +
                        params["bias"];
  EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-5, 1e-5));
}

TEST(Boft, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  for (const auto& [arch, config] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", boft({{"boft_block_size", 4}, {"boft_n_butterfly_factor", 2}})},
           {"llama", boft({{"boft_block_size", 0}, {"boft_block_num", 4}})},
           {"qwen2", boft({{"target_modules", {"q_proj", "k_proj"}}})}}) {
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

TEST(Boft, IdentityInitKeepsTheLogitsAndCountsParameters) {
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", boft({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  // per layer: q (8 blocks of 8x8, scale 64) and v (8 blocks, scale 32)
  EXPECT_EQ(model->trainable_parameter_count(), 2 * ((512 + 64) + (512 + 32)));
}

TEST(Boft, BlockDropoutActsInTrainingOnly) {
  at::manual_seed(4);
  auto model = peft("llama");
  auto in = batch(kCase, /*labels=*/true);
  model->add_adapter("default", boft({{"boft_dropout", 0.5}}));
  at::Tensor eval = logits(*model, in);
  EXPECT_TRUE(at::equal(logits(*model, in), eval));
  model->train();
  at::Tensor loss = model->forward(in).loss;
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();
  at::NoGradGuard no_grad;
  EXPECT_FALSE(at::allclose(model->forward(in).logits, eval, 1e-6, 1e-6));  // half the blocks became the identity
}

TEST(Boft, BadConfigsAreRefusedByFieldName) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("a", boft({{"boft_block_num", 4}})); }, ErrorKind::InvalidArgument,
                 "'boft_block_num'");
  expect_error([&] { model->add_adapter("a", boft({{"boft_block_size", 12}})); }, ErrorKind::InvalidArgument,
                 "'boft_block_size' (12) must divide in_features for module 'model.layers.0.self_attn.q_proj'");
  expect_error([&] { model->add_adapter("a", boft({{"boft_n_butterfly_factor", 5}})); }, ErrorKind::InvalidArgument,
                 "'boft_n_butterfly_factor'");
  expect_error([&] { model->add_adapter("a", boft({{"boft_n_butterfly_factor", 0}})); }, ErrorKind::InvalidArgument,
                 "'boft_n_butterfly_factor'");
  expect_error([&] { model->add_adapter("a", boft({{"bias", "oft_only"}})); }, ErrorKind::InvalidArgument, "'bias'");
  expect_error([&] { model->add_adapter("a", boft({{"target_modules", {"embed_tokens"}}})); },
                 ErrorKind::Unsupported, "embed_tokens");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
