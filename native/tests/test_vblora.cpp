// VB-LoRA beyond what the golden case checks: one vector bank per adapter shared by every layer (the same tensor,
// one parameter name, saved once as base_model.vblora_vector_bank), PEFT's compact save_only_topk_weights format
// written and read back, merge/unmerge on Linear and Conv1D, two adapters with their own banks, refused configs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/optim/adamw.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/tuners/vblora.h"

namespace {

using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";
const std::string kCase = kGolden + "/cases/vblora_llama";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::models::ModelInputs inputs(bool labels) {
  auto io = peft4j::io::read_safetensors(kCase + "/io.safetensors");
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  if (labels) in.labels = io.at("labels");
  return in;
}

at::Tensor logits(peft4j::models::Model& model) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(inputs(false)).logits;
}

std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "peft4j_vblora_" + std::to_string(::getpid()) + "_" + name;
}

at::Tensor named(PeftModel& model, const std::string& name) {
  auto params = model.named_parameters(true);
  const auto* p = params.find(name);
  return p ? *p : at::Tensor();
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

TEST(VBLoraBank, OneTensorSharedByEveryLayerAndSavedOnce) {
  auto model = peft("llama");
  model->load_adapter(kCase + "/adapter", "default", /*trainable=*/true);
  at::Tensor bank = named(*model, "base_model.vblora_vector_bank.default");
  ASSERT_TRUE(bank.defined());
  int layers = 0;
  for (const auto& p : model->named_parameters(true))
    if (p.key().find(".vblora_vector_bank.default") != std::string::npos && p.key().rfind("base_model.model.", 0) == 0) {
      EXPECT_EQ(p.value().unsafeGetTensorImpl(), bank.unsafeGetTensorImpl()) << p.key();
      ++layers;
    }
  EXPECT_EQ(layers, 4);
  // PEFT's named_parameters() lists the shared bank once, under the first layer that holds it.
  std::vector<std::string> banks;
  for (const auto& [name, p] : model->trainable_parameters())
    if (name.find("vblora_vector_bank") != std::string::npos) banks.push_back(name);
  EXPECT_EQ(banks, std::vector<std::string>{"base_model.model.model.layers.0.self_attn.q_proj.vblora_vector_bank.default"});
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.size(), 9u);
  EXPECT_TRUE(saved.count("base_model.vblora_vector_bank"));
  for (const auto& [key, t] : saved)
    EXPECT_TRUE(key == "base_model.vblora_vector_bank" || key.find("vblora_vector_bank") == std::string::npos) << key;

  // One step moves the bank every layer reads.
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model->trainable_parameters()) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(0.01));
  at::Tensor before = bank.detach().clone();
  model->train();
  model->forward(inputs(true)).loss.backward();
  adamw.step();
  EXPECT_FALSE(at::equal(bank, before));
  for (const auto& p : model->named_parameters(true))
    if (p.key().find("vblora_vector_bank") != std::string::npos) EXPECT_TRUE(at::equal(p.value(), bank)) << p.key();
}

// save_only_topk_weights: PEFT keeps each sub-vector's top-k indices (uint8 for < 256 vectors) and its first k-1
// softmax weights; loading rebuilds logits that select the same vectors with the same weights.
TEST(VBLoraTopk, CompactFormatRoundTripsAndRefusesTraining) {
  std::string dir = temp_dir("topk_in");
  ::mkdir(dir.c_str(), 0755);
  auto config = peft4j::io::read_json_file(kCase + "/adapter/adapter_config.json");
  config["save_only_topk_weights"] = true;
  peft4j::io::write_text_file_atomic(dir + "/adapter_config.json", config.dump(2));
  peft4j::io::write_safetensors(dir + "/adapter_model.safetensors",
                                peft4j::io::read_safetensors(kCase + "/adapter/adapter_model.safetensors"));
  auto model = peft("llama");
  model->load_adapter(dir, "default");
  at::Tensor full = logits(*model);
  std::string out = temp_dir("topk_out");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 17u);  // 8 logits tensors as indices + weights, and the bank
  const std::string a = "base_model.model.model.layers.0.self_attn.v_proj.vblora_logits_B";
  ASSERT_TRUE(saved.count(a + "_topk_indices") && saved.count(a + "_topk_weights"));
  EXPECT_FALSE(saved.count(a));
  EXPECT_EQ(saved[a + "_topk_indices"].scalar_type(), at::kByte);
  EXPECT_EQ(saved[a + "_topk_indices"].sizes(), (std::vector<int64_t>{2, 4, 2}));
  EXPECT_EQ(saved[a + "_topk_weights"].sizes(), (std::vector<int64_t>{2, 4, 1}));

  auto fresh = peft("llama");
  fresh->load_adapter(out, "default", /*trainable=*/true);
  EXPECT_TRUE(at::allclose(logits(*fresh), full, 1e-5, 1e-6));
  fresh->train();
  expect_message([&] { fresh->forward(inputs(true)); }, peft4j::ErrorKind::InvalidArgument, "save_only_topk_weights");
  fresh->eval();  // PEFT checks the logits in training mode only: merging for inference works
  fresh->merge();
  EXPECT_TRUE(at::allclose(logits(*fresh), full, 1e-4, 1e-5));
}

TEST(VBLoraMerge, MergeEqualsUnmergedAndUnmergeRestoresOnLinearAndConv1D) {
  for (const std::string arch : {"llama", "gpt2"}) {
    auto model = peft(arch);
    std::map<std::string, at::Tensor> before;
    for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
    nlohmann::json targets = arch == "gpt2" ? nlohmann::json{"c_attn", "c_proj"} : nlohmann::json{"q_proj", "down_proj"};
    at::manual_seed(11);
    model->add_adapter("default", {{"peft_type", "VBLORA"}, {"num_vectors", 16}, {"vector_length", 16},
                                   {"init_vector_bank_bound", 0.5}, {"target_modules", targets}});
    at::Tensor unmerged = logits(*model);
    model->merge();
    // f32 rounding of the merged GEMM: 2e-5 on logits of 0.5 seen with AVX-512 OpenBLAS kernels.
    EXPECT_TRUE(at::allclose(logits(*model), unmerged, 1e-4, 1e-4)) << arch;
    model->unmerge();
    for (const auto& p : model->base_model().named_parameters()) {
      std::string key = p.key();
      if (auto pos = key.find(".base_layer"); pos != std::string::npos) key.erase(pos, 11);
      if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before[key], 1e-5, 1e-6)) << arch << ": " << key;
    }
  }
}

TEST(VBLoraAdapters, EachAdapterHasItsOwnBank) {
  auto model = peft("llama");
  at::manual_seed(2);
  nlohmann::json config = {{"peft_type", "VBLORA"}, {"num_vectors", 16}, {"vector_length", 16},
                           {"init_vector_bank_bound", 0.5}, {"target_modules", {"q_proj", "v_proj"}}};
  model->add_adapter("one", config);
  config["target_modules"] = {"v_proj"};
  config["num_vectors"] = 8;
  model->add_adapter("two", config);
  at::Tensor one_bank = named(*model, "base_model.vblora_vector_bank.one");
  at::Tensor two_bank = named(*model, "base_model.vblora_vector_bank.two");
  ASSERT_TRUE(one_bank.defined() && two_bank.defined());
  EXPECT_EQ(two_bank.size(0), 8);
  EXPECT_EQ(model->adapter_state_dict("two").at("base_model.vblora_vector_bank").size(0), 8);
  EXPECT_EQ(model->adapter_state_dict("two").size(), 5u);  // v_proj A and B in 2 layers + the bank
  model->set_adapter("one");
  at::Tensor one = logits(*model);
  model->delete_adapter("two");
  EXPECT_FALSE(named(*model, "base_model.vblora_vector_bank.two").defined());
  EXPECT_TRUE(at::equal(logits(*model), one));
}

TEST(VBLoraConfig, BadValuesAreRefusedByField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json changes) {
    nlohmann::json config = {{"peft_type", "VBLORA"}, {"num_vectors", 16}, {"vector_length", 16},
                             {"target_modules", {"q_proj"}}};
    for (auto it = changes.begin(); it != changes.end(); ++it) config[it.key()] = it.value();
    model->add_adapter("x", config);
  };
  using peft4j::ErrorKind;
  expect_message([&] { add({{"vector_length", 48}}); }, ErrorKind::InvalidArgument, "'vector_length'");
  expect_message([&] { add({{"topk", 17}}); }, ErrorKind::InvalidArgument, "'topk'");
  expect_message([&] { add({{"r", 0}}); }, ErrorKind::InvalidArgument, "'r'");
  expect_message([&] { add({{"vblora_dropout", -0.1}}); }, ErrorKind::InvalidArgument, "'vblora_dropout'");
  expect_message([&] { add({{"bias", "most"}}); }, ErrorKind::InvalidArgument, "'bias'");
  expect_message([&] { add({{"layers_pattern", "layers"}}); }, ErrorKind::InvalidArgument, "'layers_pattern'");
  expect_message([&] { add({{"target_modules", {"embed_tokens"}}}); }, ErrorKind::Unsupported, "embed_tokens");
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_FALSE(named(*model, "base_model.vblora_vector_bank.x").defined());
}

}  // namespace
