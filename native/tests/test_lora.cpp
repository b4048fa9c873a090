// LoRA and the PeftModel lifecycle against PEFT's own files (the golden cases) and known invariants.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::string case_dir(const std::string& name) { return kGolden + "/cases/" + name; }

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::io::TensorMap io(const std::string& name) { return peft4j::io::read_safetensors(case_dir(name) + "/io.safetensors"); }

at::Tensor logits(peft4j::models::Model& model, const peft4j::io::TensorMap& batch) {
  at::NoGradGuard no_grad;
  model.eval();
  peft4j::models::ModelInputs in;
  in.input_ids = batch.at("input_ids");
  in.attention_mask = batch.at("attention_mask");
  if (batch.count("labels") && model.task() == peft4j::models::Task::Seq2SeqLM) in.labels = batch.at("labels");
  return model.forward(in).logits;
}

std::map<std::string, at::Tensor> base_weights(PeftModel& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.base_model().named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "peft4j_lora_" + std::to_string(::getpid()) + "_" + name;
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

TEST(Lora, SavedAdapterHasPeftsKeysShapesAndConfig) {
  for (const std::string name : {"lora_llama_all", "dora_llama", "lora_gpt2", "lora_embed_llama", "lora_bert_seqcls",
                                 "lora_rank_pattern_llama", "lora_t5"}) {
    auto arch = peft4j::io::read_json_file(case_dir(name) + "/case.json")["arch"].get<std::string>();
    auto model = peft(arch);
    model->load_adapter(case_dir(name) + "/adapter", "default");
    std::string out = temp_dir(name);
    model->save_adapter(out, "default");
    auto theirs = peft4j::io::read_safetensors(case_dir(name) + "/adapter/adapter_model.safetensors");
    auto ours = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
    ASSERT_EQ(ours.size(), theirs.size()) << name;
    for (const auto& [key, t] : theirs) {
      ASSERT_TRUE(ours.count(key)) << name << ": " << key;
      EXPECT_TRUE(at::equal(ours[key], t)) << name << ": " << key;
    }
    auto their_config = peft4j::io::read_json_file(case_dir(name) + "/adapter/adapter_config.json");
    auto our_config = peft4j::io::read_json_file(out + "/adapter_config.json");
    for (auto it = their_config.begin(); it != their_config.end(); ++it)
      EXPECT_EQ(our_config[it.key()], it.value()) << name << ": field " << it.key();
  }
}

TEST(Lora, LoadIntoFreshBaseGivesIdenticalLogits) {
  auto batch = io("lora_llama_all");
  auto first = peft("llama");
  first->load_adapter(case_dir("lora_llama_all") + "/adapter", "default");
  std::string out = temp_dir("fresh");
  first->save_adapter(out, "default");
  auto second = peft("llama");
  second->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*first, batch), logits(*second, batch)));
}

TEST(Lora, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  for (const std::string name : {"lora_llama_all", "dora_llama", "lora_gpt2", "lora_embed_llama"}) {
    auto arch = peft4j::io::read_json_file(case_dir(name) + "/case.json")["arch"].get<std::string>();
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->load_adapter(case_dir(name) + "/adapter", "default");
    auto batch = io(name);
    at::Tensor unmerged = logits(*model, batch);
    model->merge();
    EXPECT_TRUE(at::allclose(logits(*model, batch), unmerged, 1e-4, 1e-5)) << name;
    model->unmerge();
    for (const auto& p : model->base_model().named_parameters()) {
      // after unmerge the wrapped weights sit under "...base_layer.weight"
      std::string key = p.key();
      for (const std::string wrap : {".base_layer"})
        if (auto pos = key.find(wrap); pos != std::string::npos) key.erase(pos, wrap.size());
      if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before[key], 1e-5, 1e-6)) << name << ": " << key;
    }
    EXPECT_TRUE(at::allclose(logits(*model, batch), unmerged, 1e-4, 1e-5)) << name;  // W + ΔW - ΔW rounds
  }
}

TEST(Lora, DisableGivesTheBaseModelAndDeleteUnwraps) {
  auto batch = io("lora_llama_all");
  auto model = peft("llama");
  at::Tensor base = logits(*model, batch);
  model->load_adapter(case_dir("lora_llama_all") + "/adapter", "default");
  EXPECT_FALSE(at::allclose(logits(*model, batch), base));
  model->set_disabled(true);
  EXPECT_TRUE(at::equal(logits(*model, batch), base));
  model->set_disabled(false);
  model->delete_adapter("default");
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_TRUE(at::equal(logits(*model, batch), base));
  for (const auto& p : model->base_model().named_parameters())
    EXPECT_EQ(p.key().find("lora"), std::string::npos) << p.key();
}

TEST(Lora, NewAdapterStartsAtIdentityAndCountsTrainableParameters) {
  auto batch = io("lora_llama_all");
  auto model = peft("llama");
  at::Tensor base = logits(*model, batch);
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 16}, {"target_modules", "all-linear"}};
  model->add_adapter("default", config);
  EXPECT_TRUE(at::equal(logits(*model, batch), base));  // B = 0
  // all-linear on llama: q,k,v,o,gate,up,down in 2 layers; r (in + out) each; lm_head excluded as PEFT does
  int64_t expected = 2 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64) + (64 + 128) + (64 + 128) + (128 + 64));
  EXPECT_EQ(model->trainable_parameter_count(), expected);
}

TEST(Lora, LoraBiasTrainsBsBiasAndMergesItIntoTheBaseBias) {
  auto batch = io("lora_llama_all");
  auto model = peft("gpt2");  // Conv1D layers have biases
  auto before = model->base_model().named_parameters()["transformer.h.0.attn.c_attn.bias"].clone();
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"c_attn", "c_fc"}},
                           {"fan_in_fan_out", true}, {"lora_bias", true}, {"init_lora_weights", false}};
  model->add_adapter("default", config);
  auto state = model->adapter_state_dict("default");
  at::Tensor b_bias = state.at("base_model.model.transformer.h.0.attn.c_attn.lora_B.bias");
  EXPECT_EQ(b_bias.sizes(), at::IntArrayRef({192}));
  at::Tensor unmerged = logits(*model, batch);
  model->merge();
  at::Tensor merged_bias = model->base_model().named_parameters()["transformer.h.0.attn.c_attn.base_layer.bias"];
  EXPECT_TRUE(at::allclose(merged_bias, before + 2.0 * b_bias, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(logits(*model, batch), unmerged, 1e-4, 1e-5));
  model->unmerge();
  EXPECT_TRUE(at::allclose(merged_bias, before, 1e-5, 1e-6));
  // A layer without a bias cannot take B's bias (PEFT warns when adding, refuses when merging).
  auto llama = peft("llama");
  config["target_modules"] = {"q_proj"};
  config["fan_in_fan_out"] = false;
  llama->add_adapter("default", config);
  expect_message([&] { llama->merge(); }, peft4j::ErrorKind::Unsupported, "no bias");
  config["use_dora"] = true;
  expect_message([&] { llama->add_adapter("dora", config); }, peft4j::ErrorKind::InvalidArgument, "'lora_bias'");
}

TEST(Lora, TargetedLmHeadSavesItsBaseWeightAsPeftDoes) {
  // PEFT's save_embedding_layers="auto": lm_head named in target_modules saves lm_head.base_layer.weight too.
  auto model = peft("llama");
  at::Tensor lm_head = model->base_model().named_parameters()["lm_head.weight"].clone();
  model->add_adapter("default", {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj", "lm_head"}}});
  auto state = model->adapter_state_dict("default");
  ASSERT_TRUE(state.count("base_model.model.lm_head.base_layer.weight"));
  EXPECT_TRUE(at::equal(state.at("base_model.model.lm_head.base_layer.weight"), lm_head));
  EXPECT_TRUE(state.count("base_model.model.lm_head.lora_A.weight"));
  // Not when the embedding is not named (all-linear skips lm_head; q_proj only).
  auto plain = peft("llama");
  plain->add_adapter("default", {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj"}}});
  for (const auto& [key, t] : plain->adapter_state_dict("default"))
    EXPECT_EQ(key.find("base_layer"), std::string::npos) << key;
}

TEST(Lora, SeqClsAdapterTrainsTheClassificationHeadAsPeftDoes) {
  // PEFT's saved config of the golden case lists the heads PEFT added itself; given the user's config without them,
  // the model adds them the same way, so the trainable count is PEFT's.
  std::ifstream file(case_dir("lora_bert_seqcls") + "/adapter/adapter_config.json");
  nlohmann::json config = nlohmann::json::parse(file);
  nlohmann::json peft_heads = config["modules_to_save"];
  config["modules_to_save"] = nullptr;
  auto model = peft("bert");
  model->add_adapter("default", config);
  std::ifstream case_file(case_dir("lora_bert_seqcls") + "/case.json");
  EXPECT_EQ(model->trainable_parameter_count(), nlohmann::json::parse(case_file)["trainable_params"].get<int64_t>());
  EXPECT_EQ(model->adapter_config("default")["modules_to_save"], peft_heads);
}

TEST(Lora, BadInputIsRefusedAndLeavesTheModelUnchanged) {
  auto batch = io("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, batch);
  auto unchanged = [&] {
    EXPECT_TRUE(model->adapter_names().empty());
    for (const auto& p : model->base_model().named_parameters()) {
      ASSERT_TRUE(before.count(p.key())) << "module tree changed: " << p.key();
      EXPECT_TRUE(at::equal(p.value(), before[p.key()])) << p.key();
    }
    EXPECT_TRUE(at::equal(logits(*model, batch), base));
  };
  expect_message([&] { model->add_adapter("x", {{"peft_type", "LORA"}, {"target_modules", {"nonexistent_proj"}}}); },
                 peft4j::ErrorKind::InvalidArgument, "nonexistent_proj");
  unchanged();
  expect_message([&] { model->add_adapter("x", {{"peft_type", "NOT_A_METHOD"}, {"target_modules", {"q_proj"}}}); },
                 peft4j::ErrorKind::Unsupported, "NOT_A_METHOD");
  unchanged();
  expect_message([&] { model->add_adapter("x", {{"peft_type", "LORA"}, {"r", 0}, {"target_modules", {"q_proj"}}}); },
                 peft4j::ErrorKind::InvalidArgument, "'r'");
  expect_message([&] { model->add_adapter("x", {{"peft_type", "LORA"}, {"use_qalora", true}, {"target_modules", {"q_proj"}}}); },
                 peft4j::ErrorKind::Unsupported, "use_qalora");
  // PEFT's LoraConfig refuses these in __post_init__ too.
  expect_message([&] { model->add_adapter("x", {{"peft_type", "LORA"}}); }, peft4j::ErrorKind::InvalidArgument,
                 "LORA config field 'target_modules' is required");
  expect_message([&] {
    model->add_adapter("x", {{"peft_type", "LORA"}, {"target_modules", {"q_proj"}}, {"layers_pattern", "layers"}});
  }, peft4j::ErrorKind::InvalidArgument, "LORA config field 'layers_pattern' needs 'layers_to_transform'");
  unchanged();

  // An adapter directory with a key missing, a key too many, a wrong shape, an unknown peft_type.
  auto adapter = peft4j::io::read_safetensors(case_dir("lora_llama_all") + "/adapter/adapter_model.safetensors");
  auto config_text = peft4j::io::read_text_file(case_dir("lora_llama_all") + "/adapter/adapter_config.json");
  auto write_adapter = [&](const std::string& name, const peft4j::io::TensorMap& tensors, const std::string& config) {
    std::string dir = temp_dir(name);
    ::mkdir(dir.c_str(), 0755);
    peft4j::io::write_safetensors(dir + "/adapter_model.safetensors", tensors);
    peft4j::io::write_text_file_atomic(dir + "/adapter_config.json", config);
    return dir;
  };
  const std::string key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";
  auto missing = adapter;
  missing.erase(key);
  expect_message([&] { model->load_adapter(write_adapter("missing", missing, config_text), "x"); },
                 peft4j::ErrorKind::Format, "missing key '" + key + "'");
  unchanged();
  auto extra = adapter;
  extra["base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight"] = at::zeros({2});
  expect_message([&] { model->load_adapter(write_adapter("extra", extra, config_text), "x"); },
                 peft4j::ErrorKind::Format, "unexpected key 'base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight'");
  unchanged();
  auto shape = adapter;
  shape[key] = at::zeros({128, 5});
  expect_message([&] { model->load_adapter(write_adapter("shape", shape, config_text), "x"); },
                 peft4j::ErrorKind::Format, "key '" + key + "' has shape [128, 5]");
  unchanged();
  auto unknown = nlohmann::json::parse(config_text);
  unknown["peft_type"] = "MYSTERY";
  expect_message([&] { model->load_adapter(write_adapter("type", adapter, unknown.dump()), "x"); },
                 peft4j::ErrorKind::Unsupported, "MYSTERY");
  auto wrong_targets = nlohmann::json::parse(config_text);
  wrong_targets["target_modules"] = {"c_attn"};
  expect_message([&] { model->load_adapter(write_adapter("targets", adapter, wrong_targets.dump()), "x"); },
                 peft4j::ErrorKind::InvalidArgument, "c_attn");
  unchanged();
  expect_message([&] { model->load_adapter(temp_dir("absent"), "x"); }, peft4j::ErrorKind::NotFound, "does not exist");
  unchanged();
}

TEST(Lora, SavingNeverLeavesHalfWrittenFiles) {
  auto model = peft("llama");
  model->load_adapter(case_dir("lora_llama_all") + "/adapter", "default");
  std::string file = temp_dir("a_file");
  std::ofstream(file) << "not a directory";
  expect_message([&] { model->save_adapter(file, "default"); }, peft4j::ErrorKind::InvalidArgument, "it is a file");
  expect_message([&] { model->save_adapter(temp_dir("nope"), "other"); }, peft4j::ErrorKind::NotFound, "'other'");
  EXPECT_FALSE(peft4j::io::is_directory(temp_dir("nope")));
  EXPECT_EQ(peft4j::io::read_text_file(file), "not a directory");
}

}  // namespace
