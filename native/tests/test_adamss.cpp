// AdaMSS beyond the parity run: scikit-learn's K-means labels, PEFT's subspaces (sizes, order, dynamic ranks) on the
// golden llama and bert, the layer output recomputed from the saved tensors, merge with a bias column, ASA's
// importance and masking, saved keys, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/adamss.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::AdamssLayer;

nlohmann::json adamss(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "ADAMSS"}, {"r", 16}, {"num_subspaces", 3}, {"subspace_rank", 2},
                           {"target_modules", {"q_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

std::vector<int64_t> values(const at::Tensor& t) {
  at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(Adamss, KMeansLabelsAreScikitLearns) {
  // KMeans(n_clusters=k, init="random", n_init=1, max_iter=10, random_state=123456789).fit_predict(X) in scikit-learn
  // 1.9.1, X = torch.randn(n, d) after torch.manual_seed(0) (libtorch draws the same numbers).
  at::manual_seed(0);
  at::Tensor a = at::randn({64, 8}), b = at::randn({40, 6});
  EXPECT_EQ(values(peft4j::tuners::adamss_kmeans(a, 5, 10, 123456789u)),
            (std::vector<int64_t>{3, 3, 1, 3, 1, 0, 0, 2, 0, 0, 1, 0, 2, 3, 1, 2, 3, 1, 0, 1, 1, 3, 1, 1, 0, 1, 0, 0, 0, 3, 1, 2,
                                  1, 2, 0, 0, 1, 3, 3, 1, 3, 3, 4, 1, 2, 2, 2, 1, 2, 4, 1, 2, 3, 3, 0, 1, 1, 2, 1, 3, 3, 0, 1, 1}));
  EXPECT_EQ(values(peft4j::tuners::adamss_kmeans(b, 3, 10, 123456789u)),
            (std::vector<int64_t>{1, 2, 2, 0, 0, 2, 0, 2, 2, 1, 2, 0, 0, 0, 0, 2, 0, 1, 2, 1, 1, 0, 2, 1, 1, 2, 0, 0, 2, 2,
                                  0, 0, 2, 2, 0, 1, 1, 2, 0, 1}));
}

std::vector<int64_t> sizes(const AdamssLayer& layer) {
  std::vector<int64_t> out;
  for (const auto& rows : layer.subspace_rows("default")) out.push_back(rows.numel());
  return out;
}

TEST(Adamss, SubspacesArePefts) {
  // PEFT 0.21 (with scikit-learn 1.9.1) on the golden llama, r 16, 3 subspaces of rank 2: subspace sizes per layer,
  // the first output rows in scatter order, 448 trainable parameters.
  auto llama = peft("llama");
  llama->add_adapter("default", adamss({}));
  auto& q0 = layer_at<AdamssLayer>(*llama, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(sizes(q0), (std::vector<int64_t>{21, 19, 24}));
  EXPECT_EQ(sizes(layer_at<AdamssLayer>(*llama, "model.layers.1.self_attn.q_proj")), (std::vector<int64_t>{17, 25, 22}));
  EXPECT_EQ(values(q0.subspace_rows("default")[0].slice(0, 0, 10)), (std::vector<int64_t>{2, 4, 8, 12, 18, 19, 21, 23, 24, 29}));
  EXPECT_EQ(llama->trainable_parameter_count(), 448);

  // bert: the bias is a 65th input column; dynamic ranks from the clusters' singular values (threshold 0.3).
  auto bert = peft("bert");
  bert->add_adapter("default", adamss({{"r", 12}, {"num_subspaces", 4}, {"subspace_rank", 3},
                                       {"target_modules", {"query", "dense"}}, {"use_dynamic_rank", true},
                                       {"svd_threshold", 0.3}}));
  const std::string layer0 = "bert.encoder.layer.0.";
  EXPECT_EQ(sizes(layer_at<AdamssLayer>(*bert, layer0 + "attention.self.query")), (std::vector<int64_t>{11, 7, 23, 23}));
  EXPECT_EQ(sizes(layer_at<AdamssLayer>(*bert, layer0 + "attention.output.dense")), (std::vector<int64_t>{17, 9, 8, 30}));
  EXPECT_EQ(sizes(layer_at<AdamssLayer>(*bert, layer0 + "intermediate.dense")), (std::vector<int64_t>{30, 28, 21, 49}));
  EXPECT_EQ(sizes(layer_at<AdamssLayer>(*bert, layer0 + "output.dense")), (std::vector<int64_t>{5, 22, 19, 18}));
  auto t = bert->adapter_state_dict("default");
  const std::string p = "base_model.model." + layer0 + "attention.self.query.adamss_";
  EXPECT_EQ(t.at(p + "newB").sizes(), (std::vector<int64_t>{12, 65}));
  EXPECT_EQ(t.at(p + "A.0").sizes(), (std::vector<int64_t>{2, 12}));  // dynamic rank 2, then 2, 3, 3
  EXPECT_EQ(t.at(p + "A.3").sizes(), (std::vector<int64_t>{3, 12}));
  EXPECT_EQ(bert->trainable_parameter_count(), 3315);
}

TEST(Adamss, LayerOutputAndMergeFollowTheSubspaces) {
  auto bert = peft("bert");
  auto before = base_weights(*bert);
  bert->add_adapter("default", adamss({{"target_modules", {"query", "value"}}, {"init_weights", false}}));
  const std::string key = "bert.encoder.layer.1.attention.self.value";
  auto& layer = layer_at<AdamssLayer>(*bert, key);
  auto t = bert->adapter_state_dict("default");
  const std::string p = "base_model.model." + key + ".adamss_";
  at::manual_seed(9);
  at::Tensor x = at::randn({2, 3, 64});
  at::Tensor projected = at::matmul(at::cat({x, at::ones({2, 3, 1})}, -1), t.at(p + "newB").t());
  at::Tensor want = layer.base_forward(x);
  const auto& rows = layer.subspace_rows("default");
  for (size_t i = 0; i < rows.size(); ++i) {
    at::Tensor out = at::matmul(at::matmul(projected, t.at(p + "A." + std::to_string(i)).t()),
                                t.at(p + "B." + std::to_string(i)).t());
    want.index_add_(-1, rows[i], out);
  }
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(layer.forward(x), want, 1e-4, 1e-5));
  }
  expect_merge_round_trip(*bert, before, batch("lora_bert_seqcls"), "adamss bert");
}

TEST(Adamss, IdentityInitAndSavedKeys) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", adamss({}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.size(), 14u);  // per layer: A.0-2, B.0-2, newB
  EXPECT_TRUE(saved.count("base_model.model.model.layers.1.self_attn.q_proj.adamss_B.2"));
  EXPECT_EQ(saved.at("base_model.model.model.layers.0.self_attn.q_proj.adamss_newB").sizes(),
            (std::vector<int64_t>{16, 64}));
}

TEST(Adamss, AsaFreezesTheLeastImportantSubspaces) {
  // ASA between steps 1 and 3, masking every step: the target falls from 6 subspaces to 2 (exponent 1); PEFT keeps
  // those scoring strictly above the target-th largest score, so one at the end.
  auto model = peft("llama");
  model->add_adapter("default", adamss({{"init_weights", false}, {"use_asa", true}, {"asa_target_subspaces", 2},
                                        {"init_warmup", 1}, {"final_warmup", 3}, {"mask_interval", 1},
                                        {"asa_schedule_exponent", 1.0}}));
  auto in = batch("vera_llama", /*labels=*/true);
  auto count_frozen = [&] {
    int frozen = 0;
    for (const auto& [path, layer] : model->adapter_layers())
      for (const auto& p : layer->named_parameters(true))
        if (p.key().find("adamss_A") != std::string::npos && !p.value().requires_grad()) ++frozen;
    return frozen;
  };
  std::vector<int> frozen;
  for (int64_t step = 1; step <= 3; ++step) {
    model->train();
    at::Tensor loss = model->forward(in).loss;
    loss.backward();
    model->after_optimizer_step(step);
    for (auto& [name, p] : model->trainable_parameters()) p.mutable_grad() = at::Tensor();
    frozen.push_back(count_frozen());
  }
  // step 1: target 6 (all six kept: -inf threshold); step 2: 4 -> 3 kept; step 3: 2 -> 1 kept (5 frozen).
  EXPECT_EQ(frozen, (std::vector<int>{0, 3, 5}));
}

TEST(Adamss, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", adamss(extra)); }; };
  expect_error(add({{"init_weights", "kaiming"}}), ErrorKind::InvalidArgument, "'init_weights'");
  expect_error(add({{"num_subspaces", 0}}), ErrorKind::InvalidArgument, "'num_subspaces'");
  expect_error(add({{"use_asa", true}, {"init_warmup", 10}, {"final_warmup", 10}}), ErrorKind::InvalidArgument,
               "'init_warmup'");
  expect_error(add({{"use_asa", true}, {"mask_interval", 0}}), ErrorKind::InvalidArgument, "'mask_interval'");
  expect_error(add({{"use_asa", true}, {"asa_schedule_exponent", 0}}), ErrorKind::InvalidArgument,
               "'asa_schedule_exponent'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", adamss({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "ADAMSS");
}

TEST(Adamss, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", adamss({{"init_weights", false}}));
  model->add_adapter("b", adamss({{"init_weights", false}, {"num_subspaces", 2}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "ADAMSS");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
}

}  // namespace
