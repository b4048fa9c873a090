// Intrinsic dimension (DID/SAID): θ = 0 is the identity, the projections are linear, norm-preserving and their
// autograd backward is the true adjoint Pᵀ (checked against P built from basis vectors), the trainable count is d,
// the layer's output is recomputed from θ, λ and P with plain ops, and training in a subspace far smaller than the
// adapted weights lowers the loss.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/intrinsic_dimension.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::IntrinsicLayer;
using peft4j::tuners::IntrinsicProjection;
using peft4j::tuners::PeftModel;

const nlohmann::json kConfig = {{"peft_type", "INTRINSIC_DIMENSION"},
                                {"target_modules", {"q_proj", "v_proj", "gate_proj", "down_proj"}},
                                {"intrinsic_dimension", 64}};

// H_n by Sylvester's construction.
at::Tensor hadamard_matrix(int64_t n) {
  at::Tensor h = at::ones({1, 1});
  while (h.size(0) < n) h = at::cat({at::cat({h, h}, 1), at::cat({h, -h}, 1)}, 0);
  return h;
}

TEST(IntrinsicDimension, WalshHadamardIsTheSylvesterMatrix) {
  at::manual_seed(1);
  at::Tensor x = at::randn({16});
  EXPECT_TRUE(at::allclose(peft4j::tuners::walsh_hadamard(x), hadamard_matrix(16).mv(x), 1e-5, 1e-5));
}

TEST(IntrinsicDimension, ProjectionsAreLinearNormPreservingAndTheirBackwardIsTheAdjoint) {
  for (const std::string kind : {"fastfood", "dense", "sparse"}) {
    // A 4x6 tensor (D = 24) from d = 10: P built column by column from basis vectors.
    IntrinsicProjection p(kind, 10, 24, 77, at::kCPU);
    at::Tensor basis = at::eye(10);
    std::vector<at::Tensor> columns;
    for (int64_t i = 0; i < 10; ++i) columns.push_back(p(basis[i]));
    at::Tensor dense = at::stack(columns, 1);  // [24, 10]
    at::manual_seed(2);
    at::Tensor x = at::randn({10}), y = at::randn({10});
    EXPECT_TRUE(at::allclose(p(2.5 * x - 0.5 * y), 2.5 * p(x) - 0.5 * p(y), 1e-5, 1e-5)) << kind;
    EXPECT_TRUE(at::allclose(p(x), dense.mv(x), 1e-5, 1e-5)) << kind;
    at::Tensor g = at::randn({24});
    at::Tensor leaf = x.clone().requires_grad_(true);
    (p(leaf) * g).sum().backward();
    EXPECT_TRUE(at::allclose(leaf.grad(), dense.t().mv(g), 1e-5, 1e-5)) << kind << ": backward is not Pᵀg";

    // ‖P(x)‖ ≈ ‖x‖ over seeds (on a larger tensor, so that one draw is already close).
    double ratio = 0;
    for (uint64_t seed = 0; seed < 20; ++seed) {
      IntrinsicProjection big(kind, 50, 4096, seed, at::kCPU);
      ratio += (big(x.repeat({5})).norm() / x.repeat({5}).norm()).item<double>() / 20;
    }
    EXPECT_NEAR(ratio, 1.0, 0.1) << kind;
  }
}

TEST(IntrinsicDimension, ZeroThetaIsTheIdentityAndTheCountIsD) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto in = permutation_batch(4, 8, 11);
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("default", kConfig);
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));
  EXPECT_EQ(model->trainable_parameter_count(), 64);
  // 8 adapted weights (no biases in llama): θ has 64 − 8 numbers, each layer one scale.
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.at("base_model.intrinsic_vector").numel(), 56);
  EXPECT_EQ(saved.at("base_model.model.model.layers.0.self_attn.q_proj.intrinsic_lambda").numel(), 1);
  EXPECT_EQ(saved.size(), 9u);

  auto did = kConfig;
  did["said"] = false;
  model->add_adapter("did", did);
  model->set_adapter("did");
  EXPECT_EQ(model->trainable_parameter_count(), 64);
  EXPECT_EQ(model->adapter_state_dict("did").size(), 1u);
}

TEST(IntrinsicDimension, OutputIsRecomputedFromThetaLambdaAndTheProjections) {
  for (bool said : {true, false}) {
    auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));  // Conv1D with biases
    auto config = kConfig;
    config["target_modules"] = {"c_attn", "c_fc"};
    config["said"] = said;
    config["projection"] = "dense";
    model->add_adapter("default", config);
    {
      at::NoGradGuard no_grad;
      for (auto& [name, p] : model->trainable_parameters()) p.add_(at::randn_like(p) * 0.3);
    }
    at::Tensor theta = model->adapter_state_dict("default").at("base_model.intrinsic_vector");
    for (const auto& [path, layer] : model->adapter_layers()) {
      auto* l = dynamic_cast<IntrinsicLayer*>(layer);
      ASSERT_NE(l, nullptr);
      at::Tensor lambda = said ? model->adapter_state_dict("default").at("base_model.model." + path + ".intrinsic_lambda")
                               : at::ones({2});
      at::Tensor w = l->base_parameter("weight"), b = l->base_parameter("bias");
      at::Tensor w2 = w + lambda[0] * l->projection("default", "weight")(theta).view(w.sizes());
      at::Tensor b2 = b + lambda[1] * l->projection("default", "bias")(theta);
      at::Tensor x = at::randn({2, 3, w.size(0)});
      at::NoGradGuard no_grad;
      EXPECT_TRUE(at::allclose(l->forward(x), at::matmul(x, w2) + b2, 1e-5, 1e-5)) << path << " said " << said;
    }
  }
}

TEST(IntrinsicDimension, TrainingInASmallSubspaceLowersTheLoss) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto config = kConfig;
  config["target_modules"] = "all-linear";
  config["intrinsic_dimension"] = 300;  // against 18,432 adapted weights
  model->add_adapter("default", config);
  int64_t adapted = 0;
  for (const auto& [path, layer] : model->adapter_layers())
    adapted += dynamic_cast<IntrinsicLayer*>(layer)->base_parameter("weight").numel();
  EXPECT_GT(adapted, 60 * 300);
  expect_learns(*model, "SAID d=300", 5e-2);
}

TEST(IntrinsicDimension, RefusesBadConfigsByField) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto with = [](nlohmann::json patch) {
    nlohmann::json c = kConfig;
    c.update(patch);
    return c;
  };
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"intrinsic_dimension", 8}})); },
                               ErrorKind::InvalidArgument, "'intrinsic_dimension' = 8 leaves no room");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"intrinsic_dimension", 0}})); },
                               ErrorKind::InvalidArgument, "intrinsic_dimension");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"projection", "gaussian"}})); },
                               ErrorKind::InvalidArgument, "projection");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
