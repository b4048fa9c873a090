// FRoD beyond the parity run: the SVD basis, sparse positions and λ_l are PEFT's numbers, the QR/eigh basis is
// recomputed, the layer output recomputed as U (S + diag(λ_l)) Vᵀ x + b from the saved tensors, categories, PEFT's saved
// keys, save_projection false, merge, several adapters, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/frod.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::FrodLayer;

nlohmann::json frod(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "FROD"}, {"target_modules", {"q_proj", "v_proj"}}, {"progressbar", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

void expect_values(const at::Tensor& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i].item<double>(), want[i], tol) << what << "[" << i << "]";
}

TEST(Frod, SharedTensorsArePefts) {
  // Two layers of a category: V = Rᵀ E with (Q, R) = qr of the stacked weights and E the eigenvectors of
  // T = mean_i (Q_iᵀ Q_i + α I)⁻¹, recomputed here in f64. PEFT's own numbers for V cannot be the reference here: T's
  // eigenvalues come in near pairs (Q_1ᵀQ_1 + Q_2ᵀQ_2 = I, so x and 1 − x give the same value), and its f32
  // eigenvectors are the LAPACK's rounding (and sign) of a near-degenerate problem. The sparse positions are PEFT's.
  auto model = peft("llama");
  model->add_adapter("default", frod({}));
  auto t = model->adapter_state_dict("default");
  std::vector<at::Tensor> weights;
  for (const std::string layer : {"0", "1"})
    weights.push_back(peft4j::tuners::linear_weight(
                          *layer_at<FrodLayer>(*model, "model.layers." + layer + ".self_attn.q_proj").base_layer())
                          .to(at::kDouble));
  auto [Q, R] = at::linalg_qr(at::cat(weights));
  at::Tensor eye = at::eye(64, at::kDouble);
  at::Tensor T = (at::inverse(at::matmul(Q.slice(0, 0, 64).t(), Q.slice(0, 0, 64)) + 1e-3 * eye) +
                  at::inverse(at::matmul(Q.slice(0, 64, 128).t(), Q.slice(0, 64, 128)) + 1e-3 * eye)) / 2.0;
  at::Tensor V = t.at("base_model.frod_V.self_attn_q_proj").to(at::kDouble);
  // E = R⁻ᵀ V (the sign of R's rows is LAPACK's too, so |E| and the spectrum are compared): orthonormal, and
  // it diagonalises T with T's eigenvalues in ascending order.
  at::Tensor E = at::linalg_solve(R.t(), V);
  EXPECT_TRUE(at::allclose(at::matmul(E.t(), E), eye, 1e-4, 1e-4));
  at::Tensor diagonal = at::matmul(at::matmul(E.t(), T), E);
  at::Tensor spectrum = at::linalg_eigvalsh(T);
  EXPECT_LT((diagonal - at::diag(spectrum)).abs().max().item<double>(), 1e-3 * spectrum.abs().max().item<double>());
  EXPECT_TRUE(at::equal(t.at("base_model.frod_s_indices.self_attn_q_proj").slice(1, 0, 5),
                        at::tensor({9, 41, 9, 28, 15, 54, 11, 8, 58, 59}, at::kLong).view({2, 5})));
  EXPECT_TRUE(at::equal(t.at("base_model.frod_s_indices.self_attn_v_proj").slice(1, 0, 5),
                        at::tensor({46, 38, 48, 60, 5, 63, 10, 34, 52, 30}, at::kLong).view({2, 5})));
  EXPECT_TRUE(at::equal(t.at("base_model.frod_s_size.self_attn_q_proj"), at::tensor({64, 64}, at::kLong)));

  // One layer of a category: fewer stacked rows than columns, so the basis comes from the SVD.
  auto svd = peft("llama");
  svd->add_adapter("default", frod({{"target_modules", {"down_proj"}}, {"layers_to_transform", {0}},
                                    {"projection_prng_key", 3}, {"sparse_rate", 0.02}}));
  auto s = svd->adapter_state_dict("default");
  at::Tensor D = s.at("base_model.frod_V.mlp_down_proj");
  expect_values(D[0].slice(0, 0, 4), {-0.009079992771148682, 0.017599526792764664, -0.014038443565368652,
                                      -0.05979257822036743}, 1e-5, "V down_proj");
  expect_values(D[5].slice(0, 0, 2), {0.025986045598983765, 0.09007711708545685}, 1e-5, "V down_proj [5]");
  EXPECT_EQ(s.at("base_model.frod_s_indices.mlp_down_proj").sizes(), (std::vector<int64_t>{2, 327}));
  EXPECT_TRUE(at::equal(s.at("base_model.frod_s_indices.mlp_down_proj").slice(1, 0, 5),
                        at::tensor({36, 30, 55, 41, 40, 14, 55, 20, 78, 28}, at::kLong).view({2, 5})));
  expect_values(s.at("base_model.model.model.layers.0.mlp.down_proj.frod_lambda_l").slice(0, 0, 4),
                {0.3618844747543335, 0.3575170040130615, 0.351117342710495, 0.3485634922981262}, 1e-5,
                "down_proj lambda_l");
}

TEST(Frod, CategoriesAreThePeftNames) {
  using peft4j::tuners::frod_category;
  EXPECT_EQ(frod_category("model.layers.0.self_attn.q_proj"), "self_attn_q_proj");
  EXPECT_EQ(frod_category("transformer.h.1.attn.c_attn"), "attn_c_attn");
  EXPECT_EQ(frod_category("bert.encoder.layer.0.attention.self.query"), "self_query");
  EXPECT_EQ(frod_category("bert.encoder.layer.0.attention.output.dense"), "attention_output");
  EXPECT_EQ(frod_category("bert.encoder.layer.0.output.dense"), "output_dense");
  EXPECT_EQ(frod_category("layers.3.fc"), "fc");
  EXPECT_EQ(frod_category("classifier"), "classifier");
}

TEST(Frod, LayerOutputIsTheReconstructedWeight) {
  auto model = peft("gpt2");
  model->add_adapter("default", frod({{"target_modules", {"c_attn", "c_fc"}}, {"init_weights", false},
                                      {"sparse_rate", 0.05}}));
  const std::string key = "transformer.h.1.mlp.c_fc";
  auto& layer = layer_at<FrodLayer>(*model, key);
  auto t = model->adapter_state_dict("default");
  at::Tensor V = t.at("base_model.frod_V.mlp_c_fc");
  at::Tensor idx = t.at("base_model.frod_s_indices.mlp_c_fc");
  at::Tensor S = at::zeros({64, 64});
  S.index_put_({idx[0], idx[1]}, t.at("base_model.model." + key + ".frod_lambda_s_values"));
  at::Tensor W = at::matmul(at::matmul(layer.U("default"), S + at::diag(t.at("base_model.model." + key + ".frod_lambda_l"))),
                            V.t());
  at::Tensor b = peft4j::tuners::linear_bias(*layer.base_layer());
  at::manual_seed(8);
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  layer.eval();
  EXPECT_TRUE(at::allclose(layer.forward(x), at::linear(x, W, b), 1e-4, 1e-5));
  // U (diag(λ_l)) Vᵀ is the base weight itself when S and the λ_l noise are zero.
  at::Tensor U = layer.U("default");
  auto fresh = peft("gpt2");
  fresh->add_adapter("default", frod({{"target_modules", {"c_fc"}}}));
  auto f = fresh->adapter_state_dict("default");
  at::Tensor rebuilt = at::matmul(at::matmul(U, at::diag(f.at("base_model.model." + key + ".frod_lambda_l"))), V.t());
  EXPECT_TRUE(at::allclose(rebuilt.t(), peft4j::tuners::linear_weight(*layer.base_layer()), 1e-4, 1e-5));
}

TEST(Frod, SavesPeftsKeysAndCount) {
  // PEFT 0.21 saved these for FrodConfig(target_modules=["q_proj", "v_proj"]) on the golden llama (416 trainable).
  auto model = peft("llama");
  model->add_adapter("default", frod({}));
  auto saved = model->adapter_state_dict("default");
  std::map<std::string, std::vector<int64_t>> want;
  for (const std::string proj : {"q_proj", "v_proj"}) {
    want["base_model.frod_V.self_attn_" + proj] = {64, 64};
    want["base_model.frod_s_indices.self_attn_" + proj] = {2, 40};
    want["base_model.frod_s_size.self_attn_" + proj] = {2};
    for (const std::string layer : {"0", "1"}) {
      std::string p = "base_model.model.model.layers." + layer + ".self_attn." + proj + ".frod_lambda_";
      want[p + "l"] = {64};
      want[p + "s_values"] = {40};
    }
  }
  ASSERT_EQ(saved.size(), want.size());
  for (const auto& [key, shape] : want) {
    ASSERT_TRUE(saved.count(key)) << key;
    EXPECT_EQ(saved.at(key).sizes(), shape) << key;
  }
  EXPECT_EQ(saved.at("base_model.frod_s_indices.self_attn_q_proj").scalar_type(), at::kLong);
  EXPECT_EQ(model->trainable_parameter_count(), 416);
}

TEST(Frod, SaveProjectionFalseRebuildsTheBasesFromTheWeights) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("default", frod({{"save_projection", false}, {"init_weights", false}}));
  std::string out = temp_dir("frod_noproj");
  model->save_adapter(out, "default");
  EXPECT_EQ(peft4j::io::read_safetensors(out + "/adapter_model.safetensors").size(), 8u);
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::allclose(logits(*fresh, in), logits(*model, in), 1e-6, 1e-6));
}

TEST(Frod, MergeAndUnmergeRestoreTheWeightWithOneAndTwoAdapters) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("a", frod({{"init_weights", false}, {"target_modules", {"q_proj", "down_proj"}}}));
  expect_merge_round_trip(*model, before, in, "frod a");
  model->add_adapter("b", frod({{"init_weights", false}, {"target_modules", {"q_proj", "down_proj"}}, {"sparse_rate", 0.1}}));
  model->set_active_adapters({"a", "b"});
  expect_merge_round_trip(*model, before, in, "frod a+b");
}

TEST(Frod, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", frod(extra)); }; };
  expect_error(add({{"sparse_rate", 1.5}}), ErrorKind::InvalidArgument, "'sparse_rate'");
  expect_error(add({{"runtime_offload_base_weight", true}}), ErrorKind::Unsupported, "'runtime_offload_base_weight'");
  expect_error(add({{"bias", "frod_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"frod_dropout", -0.1}}), ErrorKind::InvalidArgument, "'frod_dropout'");
  expect_error(add({{"projection_prng_key", "seven"}}), ErrorKind::InvalidArgument, "'projection_prng_key'");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(Frod, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", frod({{"init_weights", false}}));
  model->add_adapter("b", frod({{"init_weights", false}, {"projection_prng_key", 4}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "FROD");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
  EXPECT_EQ(model->adapter_state_dict("b").count("base_model.frod_V.self_attn_q_proj"), 1u);
}

}  // namespace
