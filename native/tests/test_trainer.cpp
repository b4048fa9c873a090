// The trainer on the golden tiny llama with LoRA: learning, schedules, accumulation, clipping, the optimizers'
// update rules, early stopping, NaN handling, packing, config errors, checkpoints, a resume after the training
// process is killed that ends where an uninterrupted run ends, kills at each phase of saving
// (PEFT4J_TEST_KILL_AT), and inputs refused before any work.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <thread>

#include "golden_testing.h"
#include "peft4j/files.h"
#include "peft4j/models/checkpointing.h"
#include "peft4j/train/checkpoint_dirs.h"
#include "peft4j/train/lr_schedule.h"
#include "peft4j/train/train_step.h"
#include "peft4j/train/trainer.h"

extern char** environ;

namespace {

using golden_testing::expect_error;
using golden_testing::temp_dir;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;
using namespace peft4j::train;

// LoRA on q/v of the golden llama, its random init fixed by `seed`.
std::shared_ptr<PeftModel> lora_llama(double dropout = 0.0, uint64_t seed = 7) {
  at::manual_seed(seed);
  auto model = golden_testing::peft("llama");
  model->add_adapter("default", {{"peft_type", "LORA"},
                                 {"r", 4},
                                 {"lora_alpha", 8},
                                 {"lora_dropout", dropout},
                                 {"target_modules", {"q_proj", "v_proj"}},
                                 {"task_type", "CAUSAL_LM"}});
  return model;
}

// `count` random token sequences of `length` (the golden llama's vocabulary is 256), labels = ids.
TrainingData random_sequences(int64_t count, int64_t length, uint64_t seed) {
  std::mt19937_64 generator(seed);
  TrainingData data;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<int64_t> ids(length);
    for (auto& id : ids) id = static_cast<int64_t>(generator() % 256);
    data.add_sequence(ids.data(), ids.data(), length);
  }
  return data;
}

TrainConfig config_for(const std::string& dir, nlohmann::json fields) {
  fields["output_dir"] = dir;
  return TrainConfig::from_json(fields);
}

std::map<std::string, at::Tensor> trainable_copy(PeftModel& model) {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, p] : model.trainable_parameters()) out[name] = p.detach().clone();
  return out;
}

double max_difference(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  return worst;
}

std::vector<double> train_all(Trainer& trainer) {
  std::vector<double> losses;
  while (trainer.step()) losses.push_back(trainer.metrics().loss);
  return losses;
}

}  // namespace

TEST(TrainerSchedule, FactorsMatchTransformersClosedForms) {
  const int64_t warmup = 3, total = 11;
  for (int64_t s = 0; s <= total + 1; ++s) {
    const double warm = static_cast<double>(s) / warmup;
    // get_linear_schedule_with_warmup: max(0, (total - s) / max(1, total - warmup)) after warmup
    const double linear = s < warmup ? warm : std::max(0.0, double(total - s) / double(total - warmup));
    // get_cosine_schedule_with_warmup, num_cycles 0.5: max(0, 0.5 (1 + cos(pi * 2 * 0.5 * progress)))
    const double progress = double(s - warmup) / double(total - warmup);
    const double cosine = s < warmup ? warm : std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    const double constant = s < warmup ? warm : 1.0;
    EXPECT_NEAR(lr_factor("linear", s, warmup, total), linear, 1e-15) << s;
    EXPECT_NEAR(lr_factor("cosine", s, warmup, total), cosine, 1e-15) << s;
    EXPECT_NEAR(lr_factor("constant", s, warmup, total), constant, 1e-15) << s;
  }
  EXPECT_DOUBLE_EQ(lr_factor("linear", 0, 0, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor("cosine", 5, 0, 10), 0.5);
  expect_error([] { lr_factor("polynomial", 0, 0, 10); }, ErrorKind::InvalidArgument, "polynomial");
}

TEST(TrainerSchedule, EachStepUsesTheScheduledRate) {
  for (const std::string type : {"constant", "linear", "cosine"}) {
    auto model = lora_llama();
    Trainer trainer(model, random_sequences(4, 6, 1), {},
                    config_for(temp_dir("schedule_" + type),
                               {{"lr_scheduler_type", type}, {"warmup_steps", 2}, {"max_steps", 6},
                                {"learning_rate", 0.01}, {"per_device_train_batch_size", 2}}));
    for (int64_t s = 0; trainer.step(); ++s)
      EXPECT_NEAR(trainer.metrics().learning_rate, 0.01 * lr_factor(type, s, 2, 6), 1e-15) << type << " step " << s;
    EXPECT_EQ(trainer.metrics().global_step, 6);
  }
}

TEST(TrainerStep, LossDropsOnAMemorisationTask) {
  auto model = lora_llama();
  Trainer trainer(model, random_sequences(4, 12, 2), {},
                  config_for(temp_dir("memorise"), {{"learning_rate", 0.05}, {"max_steps", 80},
                                                    {"per_device_train_batch_size", 4},
                                                    {"lr_scheduler_type", "constant"}}));
  auto losses = train_all(trainer);
  ASSERT_EQ(losses.size(), 80u);
  // Random tokens start near ln(256) = 5.55 nats. The golden llama's frozen head (weights ~ N(0, 0.02) on a hidden
  // state of norm 8) keeps logits within about +-1.3, so memorising 4 sequences of 12 tokens can only go so far
  // below: half a nat is far beyond noise.
  EXPECT_GT(losses.front(), 5.0);
  EXPECT_LT(losses.back(), losses.front() - 0.5) << losses.front() << " -> " << losses.back();
  EXPECT_EQ(trainer.metrics().tokens_seen, 80 * 4 * 12);
}

TEST(TrainerStep, AccumulatedMicroBatchesEqualOneLargeBatch) {
  // Equal-length rows with some labels ignored: the micro-batches hold different numbers of loss tokens, and the
  // step still equals one batch of all rows because each micro-batch counts by its share of the tokens.
  std::mt19937_64 generator(3);
  TrainingData data;
  for (int i = 0; i < 8; ++i) {
    std::vector<int64_t> ids(10), labels(10);
    for (int t = 0; t < 10; ++t) {
      ids[t] = static_cast<int64_t>(generator() % 256);
      labels[t] = t < i % 4 ? -100 : ids[t];
    }
    data.add_sequence(ids.data(), labels.data(), 10);
  }
  auto run = [&](int64_t batch, int64_t accumulation) {
    auto model = lora_llama();
    Trainer trainer(model, data, {},
                    config_for(temp_dir("accumulate"), {{"per_device_train_batch_size", batch},
                                                        {"gradient_accumulation_steps", accumulation},
                                                        {"max_steps", 3},
                                                        {"learning_rate", 0.01},
                                                        {"max_grad_norm", 0.0}}));
    auto losses = train_all(trainer);
    return std::make_pair(losses, trainable_copy(*model));
  };
  auto [big_losses, big] = run(4, 1);
  auto [small_losses, small] = run(2, 2);
  ASSERT_EQ(big_losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(small_losses[i], big_losses[i], 1e-6) << "step " << i + 1;
  EXPECT_LE(max_difference(small, big), 1e-6);
}

TEST(TrainerStep, GradientCheckpointingGivesThePlainSteps) {
  // Each layer recomputed in the backward pass, with the forward's random state: LoRA dropout draws the same masks,
  // so losses and weights after a few steps equal those of the plain run (the same ops, in the same order).
  auto run = [](bool checkpointing) {
    auto model = lora_llama(0.3);
    Trainer trainer(model, random_sequences(4, 12, 5), {},
                    config_for(temp_dir("checkpointing"), {{"gradient_checkpointing", checkpointing},
                                                           {"per_device_train_batch_size", 2},
                                                           {"max_steps", 4},
                                                           {"learning_rate", 0.01}}));
    auto losses = train_all(trainer);
    return std::make_pair(losses, trainable_copy(*model));
  };
  auto [plain_losses, plain] = run(false);
  auto [checkpointed_losses, checkpointed] = run(true);
  ASSERT_EQ(plain_losses.size(), 4u);
  ASSERT_EQ(checkpointed_losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(checkpointed_losses[i], plain_losses[i], 1e-6) << "step " << i + 1;
  EXPECT_LE(max_difference(checkpointed, plain), 1e-6);
  // and dropout did act: without it (same init, data and seed) the last step differs (the first cannot: B = 0)
  auto model = lora_llama(0.0);
  Trainer no_dropout(model, random_sequences(4, 12, 5), {},
                     config_for(temp_dir("checkpointing_no_dropout"), {{"per_device_train_batch_size", 2},
                                                                       {"max_steps", 4},
                                                                       {"learning_rate", 0.01}}));
  EXPECT_NE(train_all(no_dropout).back(), plain_losses.back());
}

TEST(TrainerStep, GradientCheckpointingPutsOneRecomputingNodePerLayer) {
  auto model = lora_llama(0.3);
  model->train();
  auto inputs = golden_testing::batch("lora_llama_all", true);
  auto count_checkpoints = [&](bool on) {
    peft4j::models::GradientCheckpointing checkpointing(on);
    at::Tensor loss = model->forward(inputs).loss;
    std::set<torch::autograd::Node*> seen;
    std::vector<torch::autograd::Node*> todo = {loss.grad_fn().get()};
    int checkpoints = 0;
    while (!todo.empty()) {
      torch::autograd::Node* node = todo.back();
      todo.pop_back();
      if (!node || !seen.insert(node).second) continue;
      if (node->name().find("CheckpointBackward") != std::string::npos) ++checkpoints;
      for (const auto& edge : node->next_edges()) todo.push_back(edge.function.get());
    }
    return checkpoints;
  };
  EXPECT_EQ(count_checkpoints(true), 2);  // the golden llama's two decoder layers
  EXPECT_EQ(count_checkpoints(false), 0);
}

TEST(TrainerStep, ClippingCapsTheGradientNorm) {
  auto batch = golden_testing::batch("lora_llama_all", true);
  // The unclipped gradient, recomputed independently.
  auto reference = lora_llama();
  reference->train();
  reference->forward(batch).loss.backward();
  double squared = 0;
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, p] : reference->trainable_parameters()) {
    squared += p.grad().pow(2).sum().item<double>();
    grads[name] = p.grad().clone();
  }
  const double norm = std::sqrt(squared);
  auto model = lora_llama();
  auto before = trainable_copy(*model);
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model->trainable_parameters()) params.push_back(p);
  OptimizerSettings sgd;
  sgd.name = "sgd";
  sgd.learning_rate = 1.0;
  auto optimizer = make_optimizer(params, sgd);
  const double cap = norm / 10;
  StepOptions options;
  options.max_grad_norm = cap;
  StepResult result = optimizer_step(*model, *optimizer, {batch}, options);
  EXPECT_NEAR(result.grad_norm, norm, 1e-5 * norm);
  // SGD with lr 1 moves each parameter by its clipped gradient: g * cap / norm (torch adds 1e-6 to the norm).
  for (auto& [name, p] : model->trainable_parameters()) {
    at::Tensor expected = before.at(name) - grads.at(name) * (cap / (norm + 1e-6));
    EXPECT_LE((p.detach() - expected).abs().max().item<double>(), 1e-6) << name;
  }
}

TEST(TrainerStep, SgdAndAdamwUpdatesMatchTheirFormulas) {
  auto batch = golden_testing::batch("lora_llama_all", true);
  auto reference = lora_llama();
  reference->train();
  reference->forward(batch).loss.backward();
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, p] : reference->trainable_parameters()) grads[name] = p.grad().clone();
  const double lr = 0.01, decay = 0.1, eps = 1e-8;
  for (const std::string name : {"sgd", "adamw"}) {
    auto model = lora_llama();
    auto before = trainable_copy(*model);
    std::vector<at::Tensor> params;
    for (auto& [n, p] : model->trainable_parameters()) params.push_back(p);
    OptimizerSettings settings;
    settings.name = name;
    settings.learning_rate = lr;
    settings.weight_decay = decay;
    settings.epsilon = eps;
    auto optimizer = make_optimizer(params, settings);
    optimizer_step(*model, *optimizer, {batch}, StepOptions{});
    for (auto& [n, p] : model->trainable_parameters()) {
      const at::Tensor& w = before.at(n);
      const at::Tensor& g = grads.at(n);
      // SGD: w - lr (g + decay w). AdamW's first step: bias-corrected moments are g and g², so
      // w (1 - lr decay) - lr g / (|g| + eps).
      at::Tensor expected = name == "sgd" ? w - lr * (g + decay * w) : w * (1 - lr * decay) - lr * g / (g.abs() + eps);
      EXPECT_LE((p.detach() - expected).abs().max().item<double>(), 1e-6) << name << " " << n;
    }
  }
}

TEST(TrainerStep, EarlyStoppingEndsTheRunAndCheckpoints) {
  // Learning rate 0: the eval loss never improves after the first evaluation, so patience 2 stops at step 3.
  auto model = lora_llama();
  const std::string dir = temp_dir("early");
  Trainer trainer(model, random_sequences(4, 8, 4), random_sequences(2, 8, 5),
                  config_for(dir, {{"learning_rate", 0.0}, {"max_steps", 10}, {"eval_steps", 1},
                                   {"early_stopping_patience", 2}, {"per_device_train_batch_size", 2}}));
  int steps = 0;
  while (trainer.step()) {
    ++steps;
    EXPECT_TRUE(trainer.metrics().evaluated);
    EXPECT_TRUE(std::isfinite(trainer.metrics().eval_loss));
    EXPECT_TRUE(std::isnan(trainer.metrics().eval_accuracy));
  }
  EXPECT_EQ(steps, 3);
  EXPECT_TRUE(trainer.metrics().stopped_early);
  EXPECT_EQ(trainer.metrics().checkpoint, dir + "/checkpoint-3");
  EXPECT_FALSE(trainer.step());
}

TEST(TrainerStep, NonFiniteLossStopsWithTheCheckpointIntact) {
  auto model = lora_llama();
  const std::string dir = temp_dir("nan");
  Trainer trainer(model, random_sequences(4, 8, 6), {},
                  config_for(dir, {{"learning_rate", 0.01}, {"max_steps", 5}, {"save_steps", 1},
                                   {"per_device_train_batch_size", 4}}));
  ASSERT_TRUE(trainer.step());
  ASSERT_TRUE(trainer.step());
  auto good = trainable_copy(*model);
  // A diverged weight, as an exploding run leaves it: the next forward computes a NaN loss.
  {
    at::NoGradGuard no_grad;
    model->trainable_parameters().front().second.fill_(std::numeric_limits<float>::infinity());
  }
  auto diverged = trainable_copy(*model);
  expect_error([&] { trainer.step(); }, ErrorKind::Numerical, "at step 3");
  // The failed step changed nothing, and the newest checkpoint on disk is step 2's, whole.
  auto after = trainable_copy(*model);
  for (const auto& [name, t] : after) EXPECT_TRUE(at::equal(t, diverged.at(name))) << name;
  auto checkpoints = list_checkpoints(dir, Trainer::kStateFile);
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back().step, 2);
  EXPECT_EQ(peft4j::io::read_json_file(checkpoints.back().path + "/trainer_state.json")["global_step"], 2);
  auto restored = lora_llama(0.0, 99);
  Trainer resumed(restored, random_sequences(4, 8, 6), {},
                  config_for(dir, {{"learning_rate", 0.01}, {"max_steps", 5}, {"save_steps", 1},
                                   {"per_device_train_batch_size", 4}}));
  resumed.resume_from_latest();
  EXPECT_EQ(max_difference(trainable_copy(*restored), good), 0.0);
}

TEST(TrainerData, PackingFillsBlocksAndTruncationCuts) {
  TrainingData data;
  std::vector<std::vector<int64_t>> ids = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}};
  for (const auto& e : ids) {
    std::vector<int64_t> labels(e.size());
    for (size_t i = 0; i < e.size(); ++i) labels[i] = i == 0 ? -100 : 10 * e[i];
    data.add_sequence(e.data(), labels.data(), static_cast<int64_t>(e.size()));
  }
  auto packed = prepare_examples(data, 4, true);
  ASSERT_EQ(packed.size(), 3u);
  EXPECT_EQ(packed[0].input_ids, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(packed[0].labels, (std::vector<int64_t>{-100, 20, 30, -100}));
  EXPECT_EQ(packed[1].input_ids, (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(packed[1].labels, (std::vector<int64_t>{50, -100, 70, 80}));
  EXPECT_EQ(packed[2].input_ids, (std::vector<int64_t>{9}));
  EXPECT_EQ(packed[2].labels, (std::vector<int64_t>{90}));
  auto cut = prepare_examples(data, 2, false);
  ASSERT_EQ(cut.size(), 3u);
  EXPECT_EQ(cut[2].input_ids, (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(cut[2].labels, (std::vector<int64_t>{-100, 70}));
  // Right padding: pad id, mask 0 and label -100 behind each shorter row.
  auto batch = collate({&cut[0], &packed[2]}, 0, at::kCPU);
  EXPECT_TRUE(at::equal(batch.input_ids, at::tensor({1, 2, 9, 0}, at::kLong).view({2, 2})));
  EXPECT_TRUE(at::equal(batch.attention_mask, at::tensor({1, 1, 1, 0}, at::kLong).view({2, 2})));
  EXPECT_TRUE(at::equal(batch.labels, at::tensor({-100, 20, 90, -100}, at::kLong).view({2, 2})));
  // Every epoch's order is a permutation fixed by (seed, epoch).
  auto order = epoch_order(50, 42, 3);
  EXPECT_EQ(order, epoch_order(50, 42, 3));
  EXPECT_NE(order, epoch_order(50, 42, 4));
  std::sort(order.begin(), order.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  TrainingData classified;
  classified.add_classified(ids[0].data(), 3, 1);
  expect_error([&] { classified.add_sequence(ids[0].data(), ids[0].data(), 3); }, ErrorKind::InvalidArgument,
               "classified");
  expect_error([&] { prepare_examples(classified, 4, true); }, ErrorKind::InvalidArgument, "packing");
}

TEST(TrainerConfig, RejectsBadFieldsAndSettings) {
  expect_error([] { config_for("x", {{"learning_rat", 0.1}}); }, ErrorKind::InvalidArgument, "learning_rat");
  expect_error([] { config_for("x", {{"max_steps", "10"}}); }, ErrorKind::InvalidArgument, "max_steps");
  expect_error([] { config_for("x", {{"optimizer", "adam"}}); }, ErrorKind::InvalidArgument, "optimizer");
  expect_error([] { config_for("x", {{"gradient_accumulation_steps", 0}}); }, ErrorKind::InvalidArgument,
               "gradient_accumulation_steps");
  expect_error([] { TrainConfig::from_json(nlohmann::json::object()); }, ErrorKind::InvalidArgument, "output_dir");
  auto model = lora_llama();
  auto data = random_sequences(2, 4, 1);
  const std::string file = temp_dir("output_file");
  std::ofstream(file) << "not a directory";
  expect_error([&] { Trainer(model, data, {}, config_for(file, {})); }, ErrorKind::Io, file);
  const std::string dir = temp_dir("config_errors");
  expect_error([&] { Trainer(model, data, {}, config_for(dir, {{"bf16", true}})); }, ErrorKind::Unsupported, "bf16");
  expect_error([&] { Trainer(model, data, {}, config_for(dir, {{"task", "seq_cls"}})); }, ErrorKind::InvalidArgument,
               "task");
  expect_error([&] { Trainer(model, data, {}, config_for(dir, {{"early_stopping_patience", 1}})); },
               ErrorKind::InvalidArgument, "eval data");
  expect_error([&] { Trainer(model, {}, {}, config_for(dir, {})); }, ErrorKind::InvalidArgument, "empty");
  Trainer fresh(model, data, {}, config_for(temp_dir("no_checkpoint"), {}));
  expect_error([&] { fresh.resume_from_latest(); }, ErrorKind::NotFound, "checkpoint");
}

TEST(TrainerCheckpoint, LayoutPruningAndPeftLoadableAdapter) {
  auto model = lora_llama();
  const std::string dir = temp_dir("layout");
  Trainer trainer(model, random_sequences(6, 8, 8), random_sequences(2, 8, 9),
                  config_for(dir, {{"max_steps", 5}, {"save_steps", 1}, {"save_total_limit", 2},
                                   {"per_device_train_batch_size", 2}, {"learning_rate", 0.01}}));
  train_all(trainer);
  auto checkpoints = list_checkpoints(dir, Trainer::kStateFile);
  ASSERT_EQ(checkpoints.size(), 2u);
  EXPECT_EQ(checkpoints[0].step, 4);
  EXPECT_EQ(checkpoints[1].step, 5);
  for (const std::string file : {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json"})
    EXPECT_TRUE(peft4j::io::is_regular_file(checkpoints[1].path + "/" + file)) << file;
  auto state = peft4j::io::read_json_file(checkpoints[1].path + "/trainer_state.json");
  EXPECT_EQ(state["global_step"], 5);
  EXPECT_EQ(state["data"]["epoch_index"], 1);     // 3 batches per epoch: steps 4 and 5 are epoch 1's
  EXPECT_EQ(state["data"]["batch_in_epoch"], 2);
  EXPECT_TRUE(state["best_eval_loss"].is_number());  // the final step evaluated
  EXPECT_EQ(state["log_history"].size(), 6u);        // 5 steps and one evaluation
  // The checkpoint's adapter is PEFT's format: a fresh base loads it and computes what the trained model does.
  auto batch = golden_testing::batch("lora_llama_all");
  auto loaded = golden_testing::peft("llama");
  loaded->load_adapter(checkpoints[1].path, "default");
  EXPECT_TRUE(at::allclose(golden_testing::logits(*loaded, batch), golden_testing::logits(*model, batch), 0, 1e-6));
}

namespace {

const char* kChildDirVariable = "PEFT4J_TRAINER_CHILD_DIR";

// Starts this test binary again as a child process running only `test`, with `variables` ("NAME=value") added to
// its environment.
pid_t spawn_test(const std::string& test, const std::vector<std::string>& variables) {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
  exe[n] = '\0';
  std::string filter = "--gtest_filter=" + test;
  std::vector<char*> argv = {exe, filter.data(), nullptr};
  std::vector<std::string> owned = variables;
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  for (auto& v : owned) envp.push_back(v.data());
  envp.push_back(nullptr);
  pid_t child = 0;
  if (::posix_spawn(&child, exe, nullptr, nullptr, argv.data(), envp.data()) != 0)
    throw std::runtime_error("cannot start " + std::string(exe));
  return child;
}

// The run the resume test interrupts: dropout on (the RNG state must come back), warmup and decay, evaluation.
std::unique_ptr<Trainer> resumable_trainer(std::shared_ptr<PeftModel> model, const std::string& dir) {
  return std::make_unique<Trainer>(
      model, random_sequences(8, 10, 11), random_sequences(2, 10, 12),
      config_for(dir, {{"max_steps", 12}, {"save_steps", 3}, {"eval_steps", 4}, {"warmup_steps", 2},
                       {"learning_rate", 0.01}, {"per_device_train_batch_size", 3}, {"seed", 5}}));
}

}  // namespace

// Runs only as the child process of TrainerResume: trains, slowing down after the second checkpoint so that the
// parent's SIGKILL lands mid-run.
TEST(TrainerChildProcess, TrainsUntilKilled) {
  const char* dir = std::getenv(kChildDirVariable);
  if (!dir) GTEST_SKIP() << "runs as TrainerResume's child process only";
  auto trainer = resumable_trainer(lora_llama(0.1), dir);
  while (trainer->step())
    if (trainer->metrics().global_step >= 6) std::this_thread::sleep_for(std::chrono::milliseconds(200));
}

TEST(TrainerResume, KilledAndResumedRunEndsAsAnUninterruptedOne) {
  auto straight_model = lora_llama(0.1);
  auto straight = resumable_trainer(straight_model, temp_dir("straight"));
  std::vector<double> straight_losses = train_all(*straight);
  ASSERT_EQ(straight_losses.size(), 12u);

  const std::string dir = temp_dir("killed");
  const pid_t child = spawn_test("TrainerChildProcess.TrainsUntilKilled", {std::string(kChildDirVariable) + "=" + dir});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!peft4j::io::is_regular_file(dir + "/checkpoint-6/trainer_state.json") &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child ended by itself (status " << status << ") before it was killed";
  ASSERT_FALSE(peft4j::io::is_directory(dir + "/checkpoint-12")) << "the child finished before the kill";

  // A differently initialised model: everything must come from the checkpoint.
  auto resumed_model = lora_llama(0.1, 99);
  auto resumed = resumable_trainer(resumed_model, dir);
  resumed->resume_from_latest();
  const int64_t start = resumed->metrics().global_step;
  ASSERT_GE(start, 6);
  ASSERT_LT(start, 12);
  std::vector<double> losses = train_all(*resumed);
  ASSERT_EQ(static_cast<int64_t>(losses.size()), 12 - start);
  for (size_t i = 0; i < losses.size(); ++i)
    EXPECT_NEAR(losses[i], straight_losses[start + i], 1e-6) << "step " << start + 1 + i;
  EXPECT_NEAR(resumed->metrics().eval_loss, straight->metrics().eval_loss, 1e-6);
  EXPECT_LE(max_difference(trainable_copy(*resumed_model), trainable_copy(*straight_model)), 1e-6);
}

namespace {

TrainingData one_sequence(std::vector<int64_t> ids, std::vector<int64_t> labels) {
  TrainingData data;
  data.add_sequence(ids.data(), labels.data(), static_cast<int64_t>(ids.size()));
  return data;
}

}  // namespace

TEST(TrainerInputs, BadExamplesFailBeforeAnyWorkAndCreateNothing) {
  auto model = lora_llama();
  const std::string dir = temp_dir("bad_inputs");
  auto refused = [&](const TrainingData& train, const TrainingData& eval, nlohmann::json fields, const std::string& text) {
    expect_error([&] { Trainer(model, train, eval, config_for(dir, fields)); }, ErrorKind::InvalidArgument, text);
  };
  const TrainingData good = random_sequences(2, 4, 1);
  refused(one_sequence({1, 256, 3}, {1, 2, 3}), {}, {},
          "training example 0: input id 256 at position 1 is outside the model's vocabulary [0, 256)");
  refused(one_sequence({1, 2, -5}, {1, 2, 3}), {}, {}, "training example 0: input id -5 at position 2");
  refused(one_sequence({1, 2, 3}, {1, 2, 999}), {}, {}, "training example 0: label 999 at position 2 is outside");
  refused(one_sequence({1, 2, 3}, {1, -7, 3}), {}, {}, "label -7 at position 1");
  refused(good, one_sequence({300, 2}, {300, 2}), {}, "eval example 0: input id 300 at position 0");
  refused(one_sequence({5}, {5}), {}, {}, "training example 0 has no token to learn");
  refused(one_sequence({5}, {5}), {}, {}, "a single token is never predicted");
  refused(one_sequence({1, 2, 3}, {1, -100, -100}), {}, {}, "labels after the first position are all -100");
  // Only the last token is learnt: cutting the example to 3 tokens leaves it nothing.
  refused(one_sequence({1, 2, 3, 4}, {-100, -100, -100, 4}), {}, {{"max_seq_length", 3}},
          "training example 0 has no token to learn: its labels after the first position are all -100 once "
          "truncated to 3 tokens");
  TrainingData empty;
  std::vector<int64_t> none;
  expect_error([&] { empty.add_sequence(none.data(), none.data(), 0); }, ErrorKind::InvalidArgument, "at least one token");

  auto bert = golden_testing::peft("bert");
  bert->add_adapter("default", {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"query", "value"}},
                                {"task_type", "SEQ_CLS"}});
  TrainingData classified;
  std::vector<int64_t> ids = {1, 2, 3};
  classified.add_classified(ids.data(), 3, 3);
  expect_error([&] { Trainer(bert, classified, {}, config_for(dir, {{"task", "seq_cls"}})); },
               ErrorKind::InvalidArgument, "training example 0: class label 3 is outside the model's 3 labels");
  EXPECT_FALSE(peft4j::io::is_directory(dir)) << "a refused run created its output dir";
}

TEST(TrainerInputs, AnOutputDirThatCannotBeWrittenFailsBeforeAnyWork) {
  auto model = lora_llama();
  auto data = random_sequences(2, 4, 1);
  const std::string file = temp_dir("a_file");
  std::ofstream(file) << "keep";
  expect_error([&] { Trainer(model, data, {}, config_for(file + "/out", {})); }, ErrorKind::Io,
               "output directory '" + file + "/out' is below the file '" + file + "'");
  // sysfs refuses new files to everyone, root included (root ignores permission bits, so chmod cannot show this).
  if (!peft4j::io::is_directory("/sys/kernel")) GTEST_SKIP() << "no /sys/kernel";
  expect_error([&] { Trainer(model, data, {}, config_for("/sys/kernel", {})); }, ErrorKind::Io,
               "output directory '/sys/kernel' is not writable");
  expect_error([&] { Trainer(model, data, {}, config_for("/sys/kernel/peft4j/out", {})); }, ErrorKind::Io,
               "output directory '/sys/kernel/peft4j/out' cannot be created in '/sys/kernel'");
}

TEST(TrainerInputs, ExamplesLongerThanTheModelsPositionsAreTruncatedWithAWarning) {
  // The golden llama has 128 positions (max_position_embeddings).
  std::mt19937_64 generator(5);
  TrainingData data;
  for (int64_t length : {130, 10, 200}) {
    std::vector<int64_t> ids(length);
    for (auto& id : ids) id = static_cast<int64_t>(generator() % 256);
    data.add_sequence(ids.data(), ids.data(), length);
  }
  auto model = lora_llama();
  Trainer by_positions(model, data, one_sequence({1, 2}, {1, 2}),
                       config_for(temp_dir("positions"), {{"max_steps", 1}, {"per_device_train_batch_size", 3}}));
  ASSERT_EQ(by_positions.warnings().size(), 1u);
  EXPECT_EQ(by_positions.warnings()[0], "2 of 3 training examples were longer than 128 tokens and were truncated to "
                                        "128 (the model's 128 positions, fewer than max_seq_length 512)");
  EXPECT_TRUE(by_positions.step());
  EXPECT_EQ(by_positions.metrics().tokens_seen, 128 + 10 + 128);
  Trainer by_setting(model, data, data, config_for(temp_dir("max_seq_length"), {{"max_seq_length", 20}}));
  ASSERT_EQ(by_setting.warnings().size(), 2u);
  EXPECT_EQ(by_setting.warnings()[1], "2 of 3 eval examples were longer than 20 tokens and were truncated to 20 "
                                      "(max_seq_length)");
  Trainer short_ones(model, random_sequences(2, 8, 1), {}, config_for(temp_dir("short"), {}));
  EXPECT_TRUE(short_ones.warnings().empty());
}

namespace {

namespace fs = std::filesystem;

const char* kCrashDirVariable = "PEFT4J_CRASH_TEST_DIR";

std::unique_ptr<Trainer> crash_trainer(std::shared_ptr<PeftModel> model, const std::string& dir) {
  return std::make_unique<Trainer>(
      model, random_sequences(6, 8, 21), random_sequences(2, 8, 22),
      config_for(dir, {{"max_steps", 4}, {"save_steps", 1}, {"save_total_limit", 2}, {"learning_rate", 0.01},
                       {"per_device_train_batch_size", 2}, {"seed", 3}}));
}

// A whole run as the CLI makes it, every phase of saving included: a checkpoint each step (rotated from step 3 on),
// the final adapter into the output dir, then the last checkpoint saved again (replacing it).
void crash_run(Trainer& trainer, const std::string& dir) {
  while (trainer.step()) {
  }
  trainer.save_adapter(dir);
  trainer.save_checkpoint();
}

// Entries below `dir` with one of our temporary names.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (peft4j::io::is_temporary_file_name(name) || name.rfind(".checkpoint-", 0) == 0) out.push_back(entry.path());
  }
  return out;
}

}  // namespace

// Runs only as the child process of TrainerCrash, until PEFT4J_TEST_KILL_AT kills it.
TEST(TrainerCrashChild, RunsUntilItsKillPoint) {
  const char* dir = std::getenv(kCrashDirVariable);
  if (!dir) GTEST_SKIP() << "runs as TrainerCrash's child process only";
  auto trainer = crash_trainer(lora_llama(), dir);
  crash_run(*trainer, dir);
}

TEST(TrainerCrash, KilledAtEachPhaseOfSavingLeavesWholeCheckpointsAndResumes) {
  auto straight_model = lora_llama();
  const std::string straight_dir = temp_dir("crash_straight");
  auto straight = crash_trainer(straight_model, straight_dir);
  crash_run(*straight, straight_dir);
  ASSERT_TRUE(leftovers(straight_dir).empty());
  const auto batch = golden_testing::batch("lora_llama_all");
  const std::vector<std::string> phases = {
      "checkpoint-partial:3", "checkpoint-rename:3", "checkpoint-rotate:3", "checkpoint-replace:4",
      "atomic-rename:DIR/.checkpoint-3.tmp/adapter_model.safetensors", "atomic-rename:DIR/adapter_model.safetensors"};
  for (size_t i = 0; i < phases.size(); ++i) {
    const std::string dir = temp_dir("crash_" + std::to_string(i));
    std::string phase = phases[i];
    if (phase.find("DIR") != std::string::npos) phase.replace(phase.find("DIR"), 3, dir);
    SCOPED_TRACE(phase);
    const pid_t child = spawn_test("TrainerCrashChild.RunsUntilItsKillPoint",
                                   {std::string(kCrashDirVariable) + "=" + dir, "PEFT4J_TEST_KILL_AT=" + phase});
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    EXPECT_FALSE(leftovers(dir).empty()) << "the kill left nothing half-done: it missed its phase";

    // No checkpoint-<step> name ever shows a partial checkpoint: each loads and evaluates.
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("checkpoint-", 0) != 0) continue;
      for (const std::string file : {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "trainer_state.json"})
        EXPECT_TRUE(peft4j::io::is_regular_file(entry.path().string() + "/" + file)) << name << " lacks " << file;
      auto loaded = golden_testing::peft("llama");
      loaded->load_adapter(entry.path().string(), "default");
      EXPECT_TRUE(golden_testing::logits(*loaded, batch).isfinite().all().item<bool>()) << name;
    }

    // A trainer starting there clears the leftovers; resumed, the run ends as the uninterrupted one.
    auto resumed_model = lora_llama(0.0, 99);
    auto resumed = crash_trainer(resumed_model, dir);
    EXPECT_TRUE(leftovers(dir).empty());
    resumed->resume_from_latest();
    while (resumed->step()) {
    }
    EXPECT_EQ(resumed->metrics().global_step, 4);
    EXPECT_LE(max_difference(trainable_copy(*resumed_model), trainable_copy(*straight_model)), 1e-6);
    EXPECT_EQ(resumed->log_history().size(), straight->log_history().size()) << resumed->log_history().dump();
    EXPECT_TRUE(leftovers(dir).empty());
  }
}
