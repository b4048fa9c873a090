// AdaLoRA beyond what the golden case checks: the rank allocator against PEFT's update_and_allocate on a short
// schedule (numbers from PEFT 0.21 on the golden adalora_llama adapter), the regulariser's presence rules, pruned
// adapters saved and reloaded, merge/unmerge on Linear and Conv1D, identity init and refused configs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/optim/adamw.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/adalora.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";
const std::string kCase = kGolden + "/cases/adalora_llama";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::io::TensorMap batch() { return peft4j::io::read_safetensors(kCase + "/io.safetensors"); }

peft4j::models::ModelInputs inputs(const peft4j::io::TensorMap& io, bool labels) {
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  if (labels) in.labels = io.at("labels");
  return in;
}

at::Tensor logits(peft4j::models::Model& model) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(inputs(batch(), false)).logits;
}

double eval_loss(peft4j::models::Model& model) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(inputs(batch(), true)).loss.item<double>();
}

std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "peft4j_adalora_" + std::to_string(::getpid()) + "_" + name;
}

// The golden adapter with config fields replaced.
std::string golden_adapter_with(const std::string& name, const nlohmann::json& changes) {
  std::string dir = temp_dir(name);
  ::mkdir(dir.c_str(), 0755);
  auto config = peft4j::io::read_json_file(kCase + "/adapter/adapter_config.json");
  for (auto it = changes.begin(); it != changes.end(); ++it) config[it.key()] = it.value();
  peft4j::io::write_text_file_atomic(dir + "/adapter_config.json", config.dump(2));
  peft4j::io::write_safetensors(dir + "/adapter_model.safetensors",
                                peft4j::io::read_safetensors(kCase + "/adapter/adapter_model.safetensors"));
  return dir;
}

void expect_message(const std::function<void()>& body, peft4j::ErrorKind kind, const std::string& text) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning '" << text << "'";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// 8 AdamW steps with update_and_allocate(step) after each, schedule tinit 2, tfinal 3, total_step 8, target_r 2:
// steps 1-2 warm up, 3-4 prune to budgets 12 and 8, 5 fixes the pattern, 6-8 re-apply it. PEFT's numbers.
TEST(AdaLoraAllocator, MatchesPeftScheduleAndSavesThePrunedRanks) {
  auto model = peft("llama");
  model->load_adapter(golden_adapter_with("schedule", {{"total_step", 8}, {"tinit", 2}, {"tfinal", 3}, {"target_r", 2}}),
                      "default", /*trainable=*/true);
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model->trainable_parameters()) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(0.01).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.01));
  const std::vector<double> peft_losses = {76.5816345, 75.3877106, 74.2112732, 73.1054230,
                                           71.9973679, 70.8726807, 69.7631302, 68.6730499};
  const std::vector<std::vector<int64_t>> peft_ranks = {{}, {}, {3, 3, 3, 3}, {1, 2, 2, 3}, {1, 2, 2, 3},
                                                        {1, 2, 2, 3}, {1, 2, 2, 3}, {1, 2, 2, 3}};
  auto io = batch();
  model->train();
  for (int64_t step = 1; step <= 8; ++step) {
    adamw.zero_grad();
    at::Tensor loss = model->forward(inputs(io, true)).loss;
    EXPECT_NEAR(loss.item<double>(), peft_losses[step - 1], 1e-5 * peft_losses[step - 1]) << "step " << step;
    loss.backward();
    adamw.step();
    model->after_optimizer_step(step);
    const auto& pattern = model->adapter_config("default")["rank_pattern"];
    std::vector<int64_t> ranks;
    if (pattern.is_object())
      for (auto it = pattern.begin(); it != pattern.end(); ++it)
        ranks.push_back(std::count(it.value().begin(), it.value().end(), true));
    EXPECT_EQ(ranks, peft_ranks[step - 1]) << "step " << step;
  }
  const nlohmann::json peft_pattern = {
      {"model.layers.0.self_attn.q_proj.lora_E", {false, false, false, false, true, false}},
      {"model.layers.0.self_attn.v_proj.lora_E", {true, true, false, false, false, false}},
      {"model.layers.1.self_attn.q_proj.lora_E", {false, false, true, false, false, true}},
      {"model.layers.1.self_attn.v_proj.lora_E", {false, true, false, true, true, false}}};
  EXPECT_EQ(model->adapter_config("default")["rank_pattern"], peft_pattern);
  const std::map<std::string, std::vector<double>> peft_e = {
      {"model.layers.0.self_attn.q_proj", {0, 0, 0, 0, -1.045588, 0}},
      {"model.layers.0.self_attn.v_proj", {-0.4501673, -0.3479674, 0, 0, 0, 0}},
      {"model.layers.1.self_attn.q_proj", {0, 0, 0.3639526, 0, 0, -1.4620479}},
      {"model.layers.1.self_attn.v_proj", {0, -0.9849429, 0, -1.661518, -1.6164006, 0}}};
  for (const auto& [path, values] : peft_e) {
    auto& layer = dynamic_cast<peft4j::tuners::AdaLoraLayer&>(*peft4j::tuners::module_at(model->base_model(), path));
    at::Tensor e = layer.lora_e("default").detach().view(-1);
    for (int64_t i = 0; i < e.numel(); ++i) {
      if (values[i] == 0)
        EXPECT_EQ(e[i].item<double>(), 0.0) << path << " triplet " << i << " is pruned";
      else
        EXPECT_NEAR(e[i].item<double>(), values[i], 1e-4) << path << " triplet " << i;
    }
  }
  at::Tensor trained = logits(*model);
  const std::vector<double> peft_logits = {0.08277121931314468, -0.06247248500585556, 0.21088284254074097,
                                           0.10463858395814896};
  for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(trained[0][0][i].item<double>(), peft_logits[i], 1e-5);

  // The file keeps only the ranks the pattern kept, as PEFT's resize_state_dict_by_rank_pattern does; a fresh
  // model sized by the saved pattern gives the same logits.
  std::string out = temp_dir("pruned");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  const std::map<std::string, int64_t> kept = {{"layers.0.self_attn.q_proj", 1}, {"layers.0.self_attn.v_proj", 2},
                                               {"layers.1.self_attn.q_proj", 2}, {"layers.1.self_attn.v_proj", 3}};
  ASSERT_EQ(saved.size(), 12u);
  for (const auto& [path, r] : kept) {
    const std::string prefix = "base_model.model.model." + path;
    EXPECT_EQ(saved.at(prefix + ".lora_A").size(0), r) << path;
    EXPECT_EQ(saved.at(prefix + ".lora_E").size(0), r) << path;
    EXPECT_EQ(saved.at(prefix + ".lora_B").size(1), r) << path;
  }
  EXPECT_EQ(peft4j::io::read_json_file(out + "/adapter_config.json")["rank_pattern"], peft_pattern);
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::allclose(logits(*fresh), trained, 1e-5, 1e-6));
}

TEST(AdaLoraAllocator, NeedsTheStepsGradients) {
  auto model = peft("llama");
  model->load_adapter(kCase + "/adapter", "default", /*trainable=*/true);
  expect_message([&] { model->after_optimizer_step(1); }, peft4j::ErrorKind::InvalidArgument, "gradients");
}

// PEFT's AdaLoraModel.forward adds the regulariser to every loss of its trainable adapter (eval and disabled
// included); an adapter loaded for inference has none (PEFT has no trainable adapter then). PEFT's numbers.
TEST(AdaLoraRegulariser, JoinsEveryLossOfTheTrainableAdapter) {
  auto plain = peft("llama");
  const double base_loss = eval_loss(*plain);
  EXPECT_NEAR(base_loss, 5.557949066162109, 1e-5);

  auto model = peft("llama");
  model->load_adapter(kCase + "/adapter", "default", /*trainable=*/true);
  EXPECT_NEAR(eval_loss(*model), 76.58163452148438, 1e-4);
  model->set_disabled(true);
  EXPECT_NEAR(eval_loss(*model), 76.58149719238281, 1e-4);
  model->set_disabled(false);

  auto inference = peft("llama");
  inference->load_adapter(kCase + "/adapter", "default", /*trainable=*/false);
  inference->set_disabled(true);
  EXPECT_NEAR(eval_loss(*inference), base_loss, 1e-6);

  auto zero = peft("llama");
  zero->load_adapter(golden_adapter_with("no_reg", {{"orth_reg_weight", 0.0}}), "default", /*trainable=*/true);
  zero->set_disabled(true);
  EXPECT_NEAR(eval_loss(*zero), base_loss, 1e-6);
}

TEST(AdaLoraMerge, MergeEqualsUnmergedAndUnmergeRestoresOnLinearAndConv1D) {
  for (const std::string arch : {"llama", "gpt2"}) {
    auto model = peft(arch);
    std::map<std::string, at::Tensor> before;
    for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
    nlohmann::json targets = arch == "gpt2" ? nlohmann::json{"c_attn", "c_fc"} : nlohmann::json{"q_proj", "down_proj"};
    at::manual_seed(3);
    model->add_adapter("default", {{"peft_type", "ADALORA"}, {"init_r", 4}, {"total_step", 10},
                                   {"init_lora_weights", false}, {"lora_alpha", 2}, {"target_modules", targets}});
    at::Tensor unmerged = logits(*model);
    model->merge();
    EXPECT_TRUE(at::allclose(logits(*model), unmerged, 1e-4, 1e-5)) << arch;
    model->unmerge();
    for (const auto& p : model->base_model().named_parameters()) {
      std::string key = p.key();
      if (auto pos = key.find(".base_layer"); pos != std::string::npos) key.erase(pos, 11);
      if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before[key], 1e-5, 1e-6)) << arch << ": " << key;
    }
  }
}

TEST(AdaLoraInit, IdentityInitLeavesLogitsUnchangedAndCountsParameters) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  model->add_adapter("default", {{"peft_type", "ADALORA"}, {"init_r", 6}, {"total_step", 10},
                                 {"target_modules", {"q_proj", "v_proj"}}});
  EXPECT_TRUE(at::equal(logits(*model), base));  // E = 0
  // golden adalora_llama: A, E, B of rank 6 on q (64 -> 64) and v (64 -> 32) in 2 layers; ranknum is frozen
  EXPECT_EQ(model->trainable_parameter_count(), 2712);
}

TEST(AdaLoraConfig, BadValuesAreRefusedByField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json changes) {
    nlohmann::json config = {{"peft_type", "ADALORA"}, {"total_step", 10}, {"target_modules", {"q_proj"}}};
    for (auto it = changes.begin(); it != changes.end(); ++it) config[it.key()] = it.value();
    model->add_adapter("x", config);
  };
  using peft4j::ErrorKind;
  expect_message([&] { add({{"total_step", nullptr}}); }, ErrorKind::InvalidArgument, "'total_step'");
  expect_message([&] { add({{"tinit", 5}, {"tfinal", 5}}); }, ErrorKind::InvalidArgument, "'tinit'");
  expect_message([&] { add({{"beta1", 1.0}}); }, ErrorKind::InvalidArgument, "'beta1'");
  expect_message([&] { add({{"deltaT", 0}}); }, ErrorKind::InvalidArgument, "'deltaT'");
  expect_message([&] { add({{"orth_reg_weight", -1}}); }, ErrorKind::InvalidArgument, "'orth_reg_weight'");
  expect_message([&] { add({{"use_dora", true}}); }, ErrorKind::InvalidArgument, "'use_dora'");
  expect_message([&] { add({{"init_lora_weights", "pissa"}}); }, ErrorKind::Unsupported, "'init_lora_weights'");
  expect_message([&] { add({{"layer_replication", {{0, 1}}}}); }, ErrorKind::Unsupported, "'layer_replication'");
  expect_message([&] { add({{"rank_pattern", {{"model.layers.0.self_attn.q_proj.lora_E", {true}}}}}); },
                 ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_message([&] { add({{"target_modules", {"embed_tokens"}}}); }, ErrorKind::Unsupported, "embed_tokens");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
