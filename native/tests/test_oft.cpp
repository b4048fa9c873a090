// OFT beyond the golden case: the saved file, the rotation's algebra, merge/unmerge, options (exact Cayley, COFT,
// block sharing, r instead of the block size), several adapters, embeddings and refused configs.
#include <cmath>

#include "orthogonal_testing.h"
#include "peft4j/tuners/oft.h"

namespace {

using namespace orthogonal_testing;
using peft4j::ErrorKind;
using peft4j::tuners::OftLayer;

const std::string kCase = "oft_llama";
const std::string kQ0 = "model.layers.0.self_attn.q_proj";

nlohmann::json oft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "OFT"}, {"oft_block_size", 8}, {"init_weights", false},
                           {"target_modules", {"q_proj", "v_proj"}}};
  if (extra.is_object()) config.update(extra);  // "{}" reads as null
  return config;
}

TEST(Oft, SavedAdapterEqualsPeftsFile) { expect_saved_like_peft(kCase); }

TEST(Oft, ExactCayleyIsOrthogonalAndNeumannApproximatesIt) {
  at::manual_seed(1);
  auto model = peft("llama");
  model->add_adapter("exact", oft({{"use_cayley_neumann", false}}));
  auto& layer = layer_at<OftLayer>(*model, kQ0);
  at::Tensor r = layer.rotation_matrix("exact");
  EXPECT_TRUE(at::allclose(at::mm(r, r.t()), at::eye(64), 1e-5, 1e-5));
  // The same weights through the 5-term series: close to the Cayley transform for small weights (PEFT's series is
  // the Cayley transform of -Q, i.e. its transpose).
  model->add_adapter("series", oft({{"init_weights", true}}));
  {
    at::NoGradGuard no_grad;
    at::Tensor from = layer.named_parameters(true)["oft_R.exact.weight"];
    at::Tensor to = layer.named_parameters(true)["oft_R.series.weight"];
    to.copy_(from * 0.1);
    from.mul_(0.1);
  }
  at::Tensor exact = layer.rotation_matrix("exact");
  at::Tensor series = layer.rotation_matrix("series");
  EXPECT_TRUE(at::allclose(series, exact.t(), 1e-3, 1e-3));
  EXPECT_FALSE(at::allclose(series, exact, 1e-3, 1e-3));
}

TEST(Oft, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  for (const auto& config : {oft({}), oft({{"use_cayley_neumann", false}, {"oft_block_size", 16}}),
                             oft({{"block_share", true}})}) {
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

TEST(Oft, IdentityInitKeepsTheLogitsAndCountsBlocks) {
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", oft({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  // q_proj and v_proj read 64 features: 8 blocks of 8, 28 free entries each, in 2 layers
  EXPECT_EQ(model->trainable_parameter_count(), 2 * 2 * 8 * 28);
}

TEST(Oft, BlockSizeOrRankIsMovedToADivisorAsPeftDoes) {
  auto model = peft("llama");
  model->add_adapter("size", oft({{"oft_block_size", 7}}));  // 64: 8 is nearer than 4
  auto& q = layer_at<OftLayer>(*model, kQ0);
  EXPECT_EQ(q.block_size("size"), 8);
  model->add_adapter("rank", oft({{"oft_block_size", 0}, {"r", 6}}));  // 64: 4 and 8 tie, the lower wins
  EXPECT_EQ(q.blocks("rank"), 4);
  EXPECT_EQ(q.block_size("rank"), 16);
}

TEST(Oft, CoftKeepsEveryBlockWithinEps) {
  at::manual_seed(3);
  auto model = peft("llama");
  const double eps = 0.05;
  model->add_adapter("default", oft({{"coft", true}, {"eps", eps}}));
  logits(*model, batch(kCase));  // PEFT projects the weights in place at every forward
  auto& q = layer_at<OftLayer>(*model, kQ0);
  at::Tensor w = q.named_parameters(true)["oft_R.default.weight"];
  // A block's skew matrix holds each free entry twice: its Frobenius norm is sqrt(2) |w_row|.
  at::Tensor norms = w.norm(2, {1}) * std::sqrt(2.0);
  EXPECT_LE(norms.max().item<double>(), eps / std::sqrt(8.0) * (1 + 1e-5));
}

TEST(Oft, ActiveAdaptersRotateTheInputInTurnAndMixedBatchesRouteRows) {
  at::manual_seed(4);
  auto model = peft("llama");
  auto in = batch(kCase);
  at::Tensor base = logits(*model, in);
  model->add_adapter("first", oft({}));
  model->add_adapter("second", oft({{"oft_block_size", 16}}));
  auto& q = layer_at<OftLayer>(*model, kQ0);
  at::Tensor x = at::randn({3, 64});
  model->set_active_adapters({"first", "second"});
  at::Tensor weight = q.base_layer()->named_parameters(false)["weight"];
  at::Tensor expected = at::linear(at::mm(at::mm(x, q.rotation_matrix("first")), q.rotation_matrix("second")), weight);
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-5, 1e-5));
  }
  model->set_adapter("second");
  at::Tensor second = logits(*model, in);
  std::vector<std::string> rows = {"second", "__base__"};
  at::NoGradGuard no_grad;
  at::Tensor mixed = model->forward_mixed(in, rows).logits;
  EXPECT_TRUE(at::allclose(mixed[0], second[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(mixed[1], base[1], 1e-5, 1e-5));
}

TEST(Oft, EmbeddingTargetRotatesTheVectorsAndSavesTheBaseWeightAsPeftDoes) {
  at::manual_seed(5);
  auto model = peft("llama");
  auto in = batch(kCase);
  model->add_adapter("default", oft({{"target_modules", {"embed_tokens"}}}));
  auto& emb = layer_at<OftLayer>(*model, "model.embed_tokens");
  at::Tensor ids = in.input_ids;
  at::Tensor table = emb.base_layer()->named_parameters(false)["weight"];
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(emb.forward(ids), at::matmul(at::embedding(table, ids), emb.rotation_matrix("default")),
                             1e-5, 1e-5));
  }
  auto saved = model->adapter_state_dict("default");
  EXPECT_TRUE(saved.count("base_model.model.model.embed_tokens.oft_embedding_R.weight"));
  EXPECT_TRUE(saved.count("base_model.model.model.embed_tokens.base_layer.weight"));
  at::Tensor unmerged = logits(*model, in);
  model->merge();
  EXPECT_TRUE(at::allclose(logits(*model, in), unmerged, 1e-4, 1e-5));
}

TEST(Oft, BadConfigsAreRefusedByFieldName) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("a", oft({{"r", 4}})); }, ErrorKind::InvalidArgument, "'oft_block_size'");
  expect_error([&] { model->add_adapter("a", oft({{"r", 0}, {"oft_block_size", 0}})); }, ErrorKind::InvalidArgument,
                 "'r'");
  expect_error([&] { model->add_adapter("a", oft({{"bias", "lora_only"}})); }, ErrorKind::InvalidArgument, "'bias'");
  expect_error([&] { model->add_adapter("a", oft({{"init_weights", "gaussian"}})); }, ErrorKind::InvalidArgument,
                 "'init_weights'");
  expect_error([&] { model->add_adapter("a", oft({{"coft", true}, {"eps", 0}})); }, ErrorKind::InvalidArgument,
                 "'eps'");
  expect_error([&] { model->add_adapter("a", oft({{"target_modules", {"self_attn"}}})); }, ErrorKind::Unsupported,
                 "model.layers.0.self_attn");
  EXPECT_TRUE(model->adapter_names().empty());
  // GPT-2's Conv1D is not one of PEFT's OFT layers.
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("a", oft({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
                 "c_attn");
}

}  // namespace
