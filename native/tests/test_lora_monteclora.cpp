// MonteCLoRA (monteclora_config): the sampler's draws against their definition, evaluation and merging as plain
// LoRA, the variational loss, saved keys, refused sub-configs.
#include "linear_target_testing.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_monteclora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::LoraLayer;
using peft4j::tuners::MontecloraSampler;

nlohmann::json monteclora(nlohmann::json sub) {
  return {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
          {"target_modules", {"q_proj", "v_proj"}}, {"monteclora_config", sub}};
}

TEST(LoraMonteclora, DrawsFollowTheReparameterisations) {
  MontecloraSampler sampler(6, 3, 4, /*use_entropy=*/true, 0.1, /*sample_scaler=*/0.5, 1e-5, at::TensorOptions(), true);
  at::Tensor z_mvn = at::randn({4, 6, 3}), z_dirichlet = at::randn({4});
  at::Tensor l = at::randn({3, 3}).tril();
  at::Tensor z_wishart = at::matmul(l, l.t());
  auto [variation, weights] = sampler.sample(z_mvn, z_wishart, z_dirichlet);
  // Covariance: the diagonal of std·z·stdᵀ with std = diag(exp(std_prior)), at least 1e-3; its Cholesky factor is
  // the square root of that diagonal.
  at::Tensor s = sampler.std_prior.detach().exp();
  at::Tensor var = (s * z_wishart.diag() * s).clamp_min(1e-3);
  EXPECT_TRUE(at::allclose(sampler.gaussian_var_prior, at::diag(var), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(variation.detach(), 0.5 * z_mvn * var.sqrt(), 1e-5, 1e-6));
  // Weights: a softmax, so they sum to one; the mean is log(alpha) centred.
  EXPECT_NEAR(weights.sum().item<double>(), 1.0, 1e-6);
  EXPECT_TRUE(at::allclose(sampler.expert_weights, weights.detach(), 0, 0));
  // One sample and no scaler: the draw leaves A exactly as it is.
  MontecloraSampler one(6, 3, 1, false, 0.1, 0.0, 1e-5, at::TensorOptions(), true);
  auto [v1, w1] = one.forward();
  EXPECT_EQ(v1.abs().max().item<double>(), 0.0);
  EXPECT_EQ(w1.item<double>(), 1.0);
}

TEST(LoraMonteclora, VariationalLossIsTheKlTermsInTrainingOnly) {
  MontecloraSampler sampler(5, 2, 3, /*use_entropy=*/true, 0.1, 1e-4, 1e-2, at::TensorOptions(), true);
  sampler.eval();
  auto [kl_eval, ent_eval] = sampler.variational_loss();
  EXPECT_EQ(kl_eval.item<double>(), 0.0);
  EXPECT_EQ(ent_eval.item<double>(), 0.0);
  sampler.train();
  auto [kl, entropy] = sampler.variational_loss();
  at::Tensor a2 = sampler.expert_weights_prior.detach().exp();
  at::Tensor a1 = at::full({3}, 0.1);
  double dirichlet = (a2.sum().lgamma() - a1.sum().lgamma()).item<double>() + (a2.lgamma() - a1.lgamma()).sum().item<double>() +
                     ((a2 - a1) * (a2.digamma() - a2.sum().digamma())).sum().item<double>();
  at::Tensor var = sampler.std_prior.detach().exp().pow(2);
  double wishart = 0.5 * (-var.log().sum().item<double>() * 2 + var.sum().item<double>() * 2 - 4);
  double gaussian = 3 * 0.5 * (2 - 0 - 2);  // identity covariance before any draw
  EXPECT_NEAR(kl.item<double>(), 1e-2 * (dirichlet + wishart + gaussian), 1e-6);
  EXPECT_NEAR(entropy.item<double>(), 3 * (1.0 / 9), 1e-6);  // uniform weights before any draw
}

TEST(LoraMonteclora, EvaluationAndMergingArePlainLoraAndKeysArePefts) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", monteclora({{"num_samples", 3}}));
  auto state = model->adapter_state_dict("default");
  const std::string s = "base_model.model.model.layers.0.self_attn.q_proj.lora_monteclora_sampler.";
  EXPECT_EQ(state.at(s + "std_prior").sizes(), at::IntArrayRef({4}));
  EXPECT_EQ(state.at(s + "expert_weights_prior").sizes(), at::IntArrayRef({3}));
  EXPECT_EQ(state.at(s + "gaussian_var_prior").sizes(), at::IntArrayRef({4, 4}));
  EXPECT_EQ(state.at(s + "expert_weights").sizes(), at::IntArrayRef({3}));
  // lora_A, lora_B and the two sampler parameters train; the buffers do not (2 layers x 2 modules).
  EXPECT_EQ(model->trainable_parameter_count(), 2 * (4 * 64 + 64 * 4 + 4 + 3) + 2 * (4 * 64 + 32 * 4 + 4 + 3));
  auto& q = layer_at<LoraLayer>(*model, "model.layers.0.self_attn.q_proj");
  at::Tensor x = at::randn({2, 64});
  {
    at::NoGradGuard no_grad;
    model->eval();
    at::Tensor expected = q.base_forward(x) + at::linear(at::linear(x, q.lora_a("default")), q.lora_b("default")) * 2.0;
    EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-4, 1e-6));
    // Training draws: the output moves, and the sampler's buffers hold the draw.
    model->train();
    EXPECT_FALSE(at::allclose(q.forward(x), expected, 1e-6, 1e-7));
  }
  at::Tensor loss = peft4j::tuners::monteclora_loss(*model);
  EXPECT_GT(loss.item<double>(), 0.0);
  model->eval();
  EXPECT_EQ(peft4j::tuners::monteclora_loss(*model).item<double>(), 0.0);
  expect_merge_round_trip(*model, before, in, "monteclora");
}

TEST(LoraMonteclora, RefusesBadSubConfig) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("x", monteclora({{"num_samples", 0}})); }, ErrorKind::InvalidArgument,
               "monteclora_config.num_samples");
  expect_error([&] { model->add_adapter("x", monteclora({{"dirichlet_prior", 0}})); }, ErrorKind::InvalidArgument,
               "monteclora_config.dirichlet_prior");
  expect_error([&] { model->add_adapter("x", monteclora({{"buffer_size", -1}})); }, ErrorKind::InvalidArgument,
               "monteclora_config.buffer_size");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
