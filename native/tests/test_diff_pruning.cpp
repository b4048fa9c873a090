// Diff pruning: the identity at init (even with sampled gates), the gates and the expected-L0 penalty recomputed with
// plain ops, the gates' own learning rate in the trainer, the projection's density and its choice of the largest
// differences, entries off the support held exactly at θ₀ during fixmask training, and the saved sparse difference
// reproducing the model before and after the projection.
#include <gtest/gtest.h>

#include <cmath>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/train/trainer.h"
#include "peft4j/tuners/diff_pruning.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::DiffPruningLayer;
using peft4j::tuners::PeftModel;

const nlohmann::json kConfig = {{"peft_type", "DIFF_PRUNING"}, {"target_modules", {"c_attn", "c_fc"}}};

std::vector<std::pair<std::string, DiffPruningLayer*>> diff_layers(PeftModel& model) {
  std::vector<std::pair<std::string, DiffPruningLayer*>> out;
  for (const auto& [path, layer] : model.adapter_layers())
    if (auto* d = dynamic_cast<DiffPruningLayer*>(layer)) out.emplace_back(path, d);
  return out;
}

at::Tensor param(PeftModel& model, const std::string& name) {
  for (const auto& [n, p] : model.trainable_parameters())
    if (n == name) return p;
  throw std::runtime_error("no trainable " + name);
}

TEST(DiffPruning, IdentityAtInitEvenWithSampledGatesAndTheCount) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto in = permutation_batch(4, 8, 11);
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("default", kConfig);
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));
  model->train();
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(in).logits, base));
  }
  // 2·|θ_targets| + one group gate per tensor: c_attn [32, 96] + [96], c_fc [32, 64] + [64], two layers.
  const int64_t entries = 2 * (32 * 96 + 96 + 32 * 64 + 64);
  EXPECT_EQ(model->trainable_parameter_count(), 2 * entries + 2 * 4);
}

TEST(DiffPruning, GatesAndTheExpectedL0PenaltyAreRecomputedWithPlainOps) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto config = kConfig;
  config["sparsity_pen"] = 0.01;
  model->add_adapter("default", config);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->trainable_parameters())
      p.copy_(name.find("alpha") != std::string::npos ? at::randn_like(p) * 2 : at::randn_like(p) * 0.05);
  }
  auto in = permutation_batch(4, 8, 11);
  const std::string path = "transformer.h.0.attn.c_attn";
  auto* layer = diff_layers(*model).front().second;
  auto eval_gate = [](const at::Tensor& a) { return at::clamp(at::sigmoid(a) * 3.0 - 1.5, 0, 1); };
  const std::string pre = "base_model.model." + path + ".";
  at::Tensor w = layer->base_parameter("weight") +
                 eval_gate(param(*model, pre + "weight_log_alpha.default")) * param(*model, pre + "weight_diff.default") *
                     eval_gate(param(*model, pre + "weight_group_log_alpha.default"));
  at::Tensor b = layer->base_parameter("bias") +
                 eval_gate(param(*model, pre + "bias_log_alpha.default")) * param(*model, pre + "bias_diff.default") *
                     eval_gate(param(*model, pre + "bias_group_log_alpha.default"));
  at::Tensor x = at::randn({3, 32});
  {
    at::NoGradGuard no_grad;
    layer->eval();
    EXPECT_TRUE(at::allclose(layer->forward(x), at::addmm(b, x, w), 1e-5, 1e-6));
  }

  // The training loss minus the plain cross-entropy is 0.01 · Σ σ(α − log(1.5/1.5)) over every gate.
  double l0 = 0;
  for (const auto& [name, p] : model->trainable_parameters())
    if (name.find("log_alpha") != std::string::npos) l0 += at::sigmoid(p).sum().item<double>();
  // The same sampled gates (the same seed) with and without PeftModel's loss term.
  model->train();
  at::manual_seed(9);
  const double with_term = model->forward(in).loss.item<double>();
  at::manual_seed(9);
  const double plain = model->base_model().forward(in).loss.item<double>();
  EXPECT_NEAR(with_term - plain, 0.01 * l0, 1e-4);
}

TEST(DiffPruning, GatesTrainAtTheirOwnLearningRateInTheTrainer) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  model->add_adapter("default", kConfig);
  peft4j::train::TrainingData data;
  for (int i = 0; i < 4; ++i) {
    auto row = permutation_batch(1, 8, 900 + i).input_ids.contiguous();
    data.add_sequence(row.data_ptr<int64_t>(), row.data_ptr<int64_t>(), 8);
  }
  peft4j::train::TrainConfig config;
  config.learning_rate = 0.0;  // w does not move; the gates do, at learning_rate_alpha
  config.max_steps = 2;
  config.per_device_train_batch_size = 4;
  config.lr_scheduler_type = "constant";
  config.output_dir = golden_testing::temp_dir("diff_pruning_rates");
  auto before = model->adapter_config("default");
  std::map<std::string, at::Tensor> start;
  for (const auto& [name, p] : model->trainable_parameters()) start[name] = p.detach().clone();
  peft4j::train::Trainer trainer(model, data, {}, config);
  while (trainer.step()) {
  }
  int64_t moved_alpha = 0;
  for (const auto& [name, p] : model->trainable_parameters()) {
    if (name.find("log_alpha") != std::string::npos)
      moved_alpha += p.ne(start.at(name)).sum().item<int64_t>();
    else
      EXPECT_TRUE(at::equal(p, start.at(name))) << name;
  }
  EXPECT_GT(moved_alpha, 0);
  // The trainer told the method its length: total_step 2, half of it fixmask, so the projection happened.
  EXPECT_EQ(model->adapter_config("default")["total_step"], 2);
  EXPECT_EQ(model->adapter_config("default")["fixmask_steps"], 1);
  for (const auto& [path, layer] : diff_layers(*model)) EXPECT_EQ(layer->phase("default"), DiffPruningLayer::Phase::Fixmask);
}

TEST(DiffPruning, ProjectionKeepsTheLargestDifferencesAtTheTargetDensityThenFixmaskHoldsTheRestAtTheBase) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto base = golden_testing::base_weights(*model);
  auto config = kConfig;
  config["fixmask_pct"] = 0.05;
  config["total_step"] = 20;
  config["fixmask_steps"] = 10;
  model->add_adapter("default", config);
  train(*model, 9);  // the L0 phase: steps 1..9 (the projection follows step 10)
  std::vector<at::Tensor> before;
  {
    at::NoGradGuard no_grad;
    model->eval();
    for (const auto& [path, layer] : diff_layers(*model))
      for (const auto& name : layer->parameters()) before.push_back(layer->difference("default", name).clone());
  }
  auto in = permutation_batch(4, 8, 11);
  at::Tensor l0_logits = golden_testing::logits(*model, in);
  // Saved in the L0 phase: exactly the nonzero differences, reproducing the logits.
  const std::string l0_dir = golden_testing::temp_dir("diff_l0");
  model->save_adapter(l0_dir, "default");
  auto l0_fresh = std::make_shared<PeftModel>(tiny_model("gpt2"));
  l0_fresh->load_adapter(l0_dir, "default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*l0_fresh, in), l0_logits));

  model->train();
  model->after_optimizer_step(10);  // the projection (no further update in between: the differences are `before`)
  int64_t total = 0, kept = 0;
  std::vector<float> all;
  for (const auto& d : before)
    for (int64_t i = 0; i < d.numel(); ++i) all.push_back(std::fabs(d.view(-1)[i].item<float>()));
  std::vector<float> sorted = all;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  size_t t = 0;
  for (const auto& [path, layer] : diff_layers(*model)) {
    ASSERT_EQ(layer->phase("default"), DiffPruningLayer::Phase::Fixmask);
    for (const auto& name : layer->parameters()) {
      at::Tensor now = layer->difference("default", name);
      total += now.numel();
      kept += layer->sparse_difference("default", name).first.numel();
      // Kept entries keep their value; the smallest kept magnitude is no less than the largest dropped one.
      at::Tensor support = now.ne(0);
      EXPECT_TRUE(at::equal(now.masked_select(support), before[t].masked_select(support))) << path << "." << name;
      ++t;
    }
  }
  const int64_t target = std::llround(0.05 * static_cast<double>(total));
  EXPECT_EQ(kept, target);
  EXPECT_NEAR(static_cast<double>(kept) / static_cast<double>(total), 0.05, 1e-4);
  float threshold = sorted[static_cast<size_t>(target - 1)];
  t = 0;
  for (const auto& [path, layer] : diff_layers(*model))
    for (const auto& name : layer->parameters()) {
      at::Tensor dropped = before[t].abs().masked_select(layer->difference("default", name).eq(0));
      if (dropped.numel()) EXPECT_LE(dropped.max().item<float>(), threshold) << path << "." << name;
      ++t;
    }

  // Fixmask training: off the support every entry stays exactly at θ₀.
  std::map<std::string, at::Tensor> supports;
  for (const auto& [path, layer] : diff_layers(*model))
    for (const auto& name : layer->parameters())
      supports[path + "." + name] = layer->difference("default", name).ne(0);
  train(*model, 10);
  at::Tensor trained = golden_testing::logits(*model, in);
  const std::string dir = golden_testing::temp_dir("diff_fixmask");
  model->save_adapter(dir, "default");
  auto merged = model->merge_and_unload();
  EXPECT_TRUE(at::allclose(golden_testing::logits(*merged, in), trained, 1e-5, 1e-6));
  for (const auto& [key, support] : supports) {
    at::Tensor now = merged->named_parameters()[key], original = base.at(key);
    EXPECT_TRUE(at::equal(now.masked_select(support.logical_not()), original.masked_select(support.logical_not()))) << key;
  }
  auto fresh = std::make_shared<PeftModel>(tiny_model("gpt2"));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), trained));
  int64_t stored = 0;
  for (const auto& [k, v] : peft4j::io::read_safetensors(dir + "/adapter_model.safetensors"))
    if (k.find("_diff_values") != std::string::npos) stored += v.numel();
  EXPECT_EQ(stored, target);
}

TEST(DiffPruning, RefusesBadConfigsByField) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto with = [](nlohmann::json patch) {
    nlohmann::json c = kConfig;
    c.update(patch);
    return c;
  };
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"concrete_lower", 0.2}})); },
                               ErrorKind::InvalidArgument, "concrete_lower");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"fixmask_pct", 0.0}})); },
                               ErrorKind::InvalidArgument, "fixmask_pct");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"learning_rate_alpha", -1}})); },
                               ErrorKind::InvalidArgument, "learning_rate_alpha");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"sparsity_pen", "big"}})); },
                               ErrorKind::InvalidArgument, "sparsity_pen");
  EXPECT_TRUE(model->adapter_names().empty());
  model->add_adapter("a", with({{"total_step", 4}, {"fixmask_steps", 4}}));
  golden_testing::expect_error([&] { model->before_training(4); }, ErrorKind::InvalidArgument, "fixmask_steps");
}

}  // namespace
