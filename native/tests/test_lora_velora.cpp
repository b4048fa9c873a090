// VeLoRA (velora_config): the compressed-activation backward of A against its definition, the projection's
// updates per init_type, and plain LoRA everywhere else (forward, evaluation, merging).
#include "linear_target_testing.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_velora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::LoraLayer;

nlohmann::json velora(nlohmann::json sub) {
  return {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
          {"target_modules", {"q_proj", "v_proj"}}, {"velora_config", sub}};
}

TEST(LoraVelora, BackwardUsesTheInputReconstructedFromItsProjection) {
  // 10 features in 3 groups of 4 (zero-padded to 12).
  at::Tensor x = at::randn({2, 3, 10}).requires_grad_(true);
  at::Tensor w = at::randn({5, 10}).requires_grad_(true);
  at::Tensor embed = at::randn({4});
  embed = embed / embed.norm();
  at::Tensor out = peft4j::tuners::velora_linear(x, w, embed, 3, 0.5);
  EXPECT_TRUE(at::allclose(out, at::linear(x, w), 1e-5, 1e-6));
  at::Tensor g = at::randn({2, 3, 5});
  out.backward(g);
  at::Tensor flat = x.detach().reshape({-1, 10});
  at::Tensor grouped = at::constant_pad_nd(flat, {0, 2}).reshape({-1, 3, 4});
  at::Tensor coefficients = (grouped * embed).sum(-1);                                   // [6, 3]
  at::Tensor rebuilt = (coefficients.unsqueeze(-1) * embed).reshape({-1, 12}).slice(1, 0, 10) * 0.5;
  at::Tensor g2 = g.reshape({-1, 5});
  EXPECT_TRUE(at::allclose(w.grad(), at::matmul(g2.t(), rebuilt), 1e-4, 1e-6));
  EXPECT_TRUE(at::allclose(x.grad(), at::matmul(g, w.detach()), 1e-5, 1e-6));  // the input's gradient is exact
}

TEST(LoraVelora, GroupsAlongTheProjectionAreRebuiltExactly) {
  // Every group a multiple of the unit vector: compression loses nothing, so the gradient is LoRA's own.
  at::Tensor e = at::tensor(std::vector<float>{0.6f, 0.8f});
  at::Tensor coefficients = at::randn({7, 3});
  at::Tensor x = (coefficients.unsqueeze(-1) * e).reshape({7, 6}).requires_grad_(true);
  at::Tensor w = at::randn({4, 6}).requires_grad_(true);
  peft4j::tuners::velora_linear(x, w, e, 3, 1.0).sum().backward();
  at::Tensor w2 = w.detach().clone().requires_grad_(true);
  at::linear(x.detach(), w2).sum().backward();
  EXPECT_TRUE(at::allclose(w.grad(), w2.grad(), 1e-5, 1e-6));
}

TEST(LoraVelora, ProjectionFollowsInitTypeAndEvaluationIsPlainLora) {
  auto in = batch("lora_llama_all", /*labels=*/true);
  for (const std::string init : {"batch_average", "batch_average_once", "random"}) {
    auto model = peft("llama");
    auto before = base_weights(*model);
    model->add_adapter("default", velora({{"num_groups", 16}, {"init_type", init}}));
    auto& q = layer_at<LoraLayer>(*model, "model.layers.0.self_attn.q_proj");
    at::Tensor embed = q.variant_dict("lora_velora_embed").parameter("default");
    EXPECT_EQ(embed.sizes(), at::IntArrayRef({4})) << init;  // 64 features / 16 groups
    EXPECT_FALSE(embed.requires_grad()) << init;
    at::Tensor initial = embed.clone();
    if (init == "random") EXPECT_NEAR(initial.norm().item<double>(), 1.0, 1e-5);
    else EXPECT_EQ(initial.abs().sum().item<double>(), 0.0);
    // Evaluation draws nothing and equals plain LoRA.
    at::Tensor x = at::randn({2, 3, 64});
    {
      at::NoGradGuard no_grad;
      model->eval();
      at::Tensor expected = q.base_forward(x) + at::linear(at::linear(x, q.lora_a("default")), q.lora_b("default")) * 2.0;
      EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-4, 1e-6)) << init;
    }
    model->train();
    model->forward(in).loss.backward();
    at::Tensor first = embed.clone();
    if (init == "random") {
      EXPECT_TRUE(at::equal(first, initial)) << init;
    } else {
      EXPECT_NEAR(first.norm().item<double>(), 1.0, 1e-5) << init;
      // The projection of the batch seen by this layer: its inputs' mean group (the layer's own forward above).
      at::Tensor seen = at::randn({2, 3, 64});
      q.forward(seen).sum().backward();
      at::Tensor expected = peft4j::tuners::velora_batch_projection(seen, 16);
      if (init == "batch_average") EXPECT_TRUE(at::allclose(embed, expected, 1e-5, 1e-6)) << init;
      else EXPECT_TRUE(at::equal(embed, first)) << init;  // once: kept after the first training forward
    }
    model->eval();
    expect_merge_round_trip(*model, before, in, "velora " + init);
  }
}

TEST(LoraVelora, RefusesBadSubConfig) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("x", velora({{"num_groups", 0}})); }, ErrorKind::InvalidArgument,
               "velora_config.num_groups");
  expect_error([&] { model->add_adapter("x", velora({{"scale", 0}})); }, ErrorKind::InvalidArgument, "velora_config.scale");
  expect_error([&] { model->add_adapter("x", velora({{"init_type", "mean"}})); }, ErrorKind::InvalidArgument,
               "velora_config.init_type");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
