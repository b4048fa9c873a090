// PSOFT beyond the parity run: A and B are PEFT's numbers (full and lowrank SVD, psoft_init and pissa_init), the layer
// output recomputed as base + s (x Aᵀ (Rᵀ − I)) Bᵀ from the saved R, the Cayley transform is orthogonal, PEFT's saved
// keys, merge, several adapters, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/psoft.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::PsoftLayer;

nlohmann::json psoft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "PSOFT"}, {"r", 8}, {"psoft_alpha", 16}, {"target_modules", {"q_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

void expect_values(const at::Tensor& got, const std::vector<double>& want, const std::string& what, double tol = 2e-6) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i].item<double>(), want[i], tol) << what << "[" << i << "]";
}

TEST(Psoft, FactorsArePeftsForFullAndLowrankSvd) {
  // PEFT 0.21's _psoft_A_cache / _psoft_B_cache of model.layers.0.self_attn.q_proj on the golden llama, r 8, alpha 16.
  auto model = peft("llama");
  model->add_adapter("full", psoft({}));
  auto& layer = layer_at<PsoftLayer>(*model, "model.layers.0.self_attn.q_proj");
  expect_values(layer.A("full")[0].slice(0, 0, 4), {-0.008398540318012238, -0.08825454860925674, 0.03836352750658989,
                                                    -0.1054864376783371}, "A");
  // (the 8th singular vector is the least separated from the rest: another LAPACK's rounding moves it by 5e-6)
  expect_values(layer.A("full")[7].slice(0, 0, 2), {0.22075097262859344, 0.3592252731323242}, "A[7]", 1e-5);
  expect_values(layer.B("full").select(1, 0).slice(0, 0, 4),
                {-0.01068651583045721, 0.001687581418082118, 0.03916466236114502, -0.02994205243885517}, "B");
  expect_values(layer.B("full").select(1, 7).slice(0, 0, 2), {0.00752109894528985, 0.022966880351305008}, "B[:, 7]");
  model->add_adapter("lowrank", psoft({{"psoft_svd", "lowrank"}, {"psoft_svd_lowrank_niter", 3}, {"random_seed", 5},
                                       {"ab_svd_init", "pissa_init"}}));
  expect_values(layer.A("lowrank")[0].slice(0, 0, 4), {-0.003414531471207738, -0.039453551173210144,
                                                       0.006599273532629013, -0.0361492857336998}, "lowrank A");
  expect_values(layer.A("lowrank")[7].slice(0, 0, 2), {0.06056733429431915, 0.058524079620838165}, "lowrank A[7]");
  expect_values(layer.B("lowrank").select(1, 0).slice(0, 0, 4),
                {-0.035558316856622696, 0.03186222165822983, 0.11391974240541458, -0.04480668529868126}, "lowrank B");
  expect_values(layer.B("lowrank").select(1, 7).slice(0, 0, 2), {0.02650856412947178, 0.0011461253743618727},
                "lowrank B[:, 7]");
}

// R from the saved tensors: diag(vector_b) (I + Q)(I − Q)⁻¹ diag(vector_a), Q skew from the upper triangle.
at::Tensor rotation(const peft4j::io::TensorMap& t, const std::string& prefix, int64_t r) {
  at::Tensor upper = at::zeros({r, r});
  at::Tensor index = at::triu_indices(r, r, 1);
  upper.index_put_({index[0], index[1]}, t.at(prefix + ".weight"));
  at::Tensor Q = upper - upper.t();
  at::Tensor eye = at::eye(r);
  at::Tensor R = at::matmul(eye + Q, at::inverse(eye - Q));
  return t.at(prefix + ".vector_b").unsqueeze(1) * R * t.at(prefix + ".vector_a").unsqueeze(0);
}

TEST(Psoft, LayerOutputIsTheRotatedPrincipalSubspace) {
  auto model = peft("llama");
  model->add_adapter("default", psoft({{"init_weights", false}}));
  const std::string key = "model.layers.1.self_attn.q_proj";
  auto& layer = layer_at<PsoftLayer>(*model, key);
  {
    at::NoGradGuard no_grad;  // non-trivial magnitudes too
    for (auto& [name, p] : model->trainable_parameters())
      if (name.find("vector_") != std::string::npos) p.uniform_(0.5, 1.5);
  }
  auto t = model->adapter_state_dict("default");
  const std::string prefix = "base_model.model." + key + ".psoft_R";
  at::Tensor R = rotation(t, prefix, 8);
  // diag(b)⁻¹ R = C diag(a) with C orthogonal: its Gram matrix is diag(a²).
  at::Tensor unscaled = R / t.at(prefix + ".vector_b").unsqueeze(1);
  EXPECT_TRUE(at::allclose(at::matmul(unscaled.t(), unscaled), at::diag(t.at(prefix + ".vector_a").pow(2)), 1e-4, 1e-5));
  at::manual_seed(6);
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  at::Tensor xa = at::matmul(x, layer.A("default").t());
  at::Tensor want = layer.base_forward(x) + 2.0 * at::matmul(at::matmul(xa, R.t()) - xa, layer.B("default").t());
  EXPECT_TRUE(at::allclose(layer.forward(x), want, 1e-4, 1e-5));
}

TEST(Psoft, SavesPeftsKeysAndShapes) {
  // PEFT 0.21 saved psoft_R.{weight [28], vector_a [8], vector_b [8]} per layer for r 8 on q_proj and down_proj, and
  // counted 176 trainable parameters; A and B are not saved.
  auto model = peft("llama");
  model->add_adapter("default", psoft({{"target_modules", {"q_proj", "down_proj"}}}));
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.size(), 12u);
  for (const std::string layer : {"0", "1"})
    for (const std::string module : {"self_attn.q_proj", "mlp.down_proj"}) {
      std::string p = "base_model.model.model.layers." + layer + "." + module + ".psoft_R.";
      ASSERT_TRUE(saved.count(p + "weight")) << p;
      EXPECT_EQ(saved.at(p + "weight").sizes(), std::vector<int64_t>{28});
      EXPECT_EQ(saved.at(p + "vector_a").sizes(), std::vector<int64_t>{8});
      EXPECT_EQ(saved.at(p + "vector_b").sizes(), std::vector<int64_t>{8});
    }
  EXPECT_EQ(model->trainable_parameter_count(), 176);
}

TEST(Psoft, IdentityInitAndMergeForEachRotationForm) {
  auto in = batch("vera_llama");
  for (const nlohmann::json& form : {nlohmann::json::object(), nlohmann::json{{"use_cayley_neumann", true}, {"cayley_neumann_eps", 0.5}},
                                     nlohmann::json{{"psoft_orth", false}, {"psoft_mag_a", false}}}) {
    auto model = peft("llama");
    auto before = base_weights(*model);
    at::Tensor base = logits(*model, in);
    nlohmann::json config = psoft({{"target_modules", {"q_proj", "o_proj", "down_proj"}}});
    config.update(form);
    model->add_adapter("id", config);
    EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-5, 1e-5)) << form.dump();
    config["init_weights"] = false;
    model->add_adapter("random", config);
    model->set_adapter("random");
    EXPECT_FALSE(at::allclose(logits(*model, in), base, 1e-3, 1e-3)) << form.dump();
    expect_merge_round_trip(*model, before, in, "psoft " + form.dump());
  }
}

TEST(Psoft, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", psoft(extra)); }; };
  expect_error(add({{"r", 65}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"ab_svd_init", "olora"}}), ErrorKind::InvalidArgument, "'ab_svd_init'");
  expect_error(add({{"psoft_svd", "qr"}}), ErrorKind::InvalidArgument, "'psoft_svd'");
  expect_error(add({{"use_cayley_neumann", true}, {"num_cayley_neumann_terms", 0}}), ErrorKind::InvalidArgument,
               "'num_cayley_neumann_terms'");
  expect_error(add({{"use_cayley_neumann", true}, {"cayley_neumann_eps", 1.5}}), ErrorKind::InvalidArgument,
               "'cayley_neumann_eps'");
  expect_error(add({{"psoft_dropout", 1.0}}), ErrorKind::InvalidArgument, "'psoft_dropout'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", psoft({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "PSOFT");
}

TEST(Psoft, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", psoft({{"init_weights", false}}));
  model->add_adapter("b", psoft({{"init_weights", false}, {"r", 4}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "PSOFT");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
}

}  // namespace
