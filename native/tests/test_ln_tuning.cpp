// LN tuning beyond the golden parity case: the copies are independent of the base, one adapter acts at a time,
// merging swaps the tuned copy in (and merge_and_unload keeps it), and it works on every model family's norms.
#include <gtest/gtest.h>

#include <torch/optim/adamw.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::models::ModelInputs batch(const std::string& name, bool labels = false) {
  auto io = peft4j::io::read_safetensors(kGolden + "/cases/" + name + "/io.safetensors");
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  if (labels || name.find("t5") != std::string::npos) in.labels = io.at("labels");
  return in;
}

at::Tensor logits(peft4j::models::Model& model, const std::string& name = "ln_tuning_llama") {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(batch(name)).logits;
}

nlohmann::json config(const nlohmann::json& targets) {
  return {{"peft_type", "LN_TUNING"}, {"target_modules", targets}};
}

void expect_error(const std::function<void()>& body, peft4j::ErrorKind kind, const std::string& text) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning '" << text << "'";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

void train(PeftModel& model, const std::string& name, int steps) {
  std::vector<at::Tensor> params;
  for (auto& [n, p] : model.trainable_parameters()) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(5e-2));
  model.train();
  for (int i = 0; i < steps; ++i) {
    adamw.zero_grad();
    model.forward(batch(name, true)).loss.backward();
    adamw.step();
  }
}

const std::string kNorm = "base_model.model.model.layers.0.input_layernorm.";

TEST(LnTuning, CopiesTrainAloneAndNeverTouchTheBase) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  at::Tensor original = model->base_model().named_parameters()["model.layers.0.input_layernorm.weight"].detach().clone();
  model->add_adapter("default", config({"input_layernorm", "post_attention_layernorm"}));
  EXPECT_TRUE(at::equal(logits(*model), base));
  std::vector<std::string> names;
  for (const auto& [n, p] : model->trainable_parameters()) names.push_back(n);
  EXPECT_EQ(names.size(), 4u);
  EXPECT_EQ(names[0], kNorm + "ln_tuning_layers.default.weight");
  EXPECT_EQ(model->trainable_parameter_count(), 256);
  train(*model, "ln_tuning_llama", 3);
  auto params = model->named_parameters(true);
  EXPECT_TRUE(at::equal(params[kNorm + "base_layer.weight"], original));
  EXPECT_FALSE(at::allclose(params[kNorm + "ln_tuning_layers.default.weight"], original));
  model->set_disabled(true);
  EXPECT_TRUE(at::equal(logits(*model), base));
}

TEST(LnTuning, OneAdapterAtATime) {
  auto model = peft("llama");
  model->add_adapter("a", config({"input_layernorm"}));
  train(*model, "ln_tuning_llama", 2);
  model->add_adapter("b", config({"input_layernorm"}));
  model->set_adapter("b");
  train(*model, "ln_tuning_llama", 4);
  model->set_adapter("a");
  at::Tensor a = logits(*model);
  model->set_adapter("b");
  at::Tensor b = logits(*model);
  EXPECT_FALSE(at::allclose(a, b, 1e-5, 1e-6));
  model->set_active_adapters({"a", "b"});
  expect_error([&] { logits(*model); }, peft4j::ErrorKind::InvalidArgument, "one adapter at a time");
  expect_error([&] { model->merge({"a", "b"}); }, peft4j::ErrorKind::InvalidArgument, "one adapter at a time");

  // Merging b after a unmerges a first, as PEFT does.
  model->set_adapter("a");
  model->merge({"a"});
  EXPECT_TRUE(at::allclose(logits(*model), a, 1e-6, 1e-7));
  model->merge({"b"});
  EXPECT_TRUE(at::allclose(logits(*model), b, 1e-6, 1e-7));
  model->unmerge();
  model->set_adapter("b");
  EXPECT_TRUE(at::equal(logits(*model), b));

  at::NoGradGuard no_grad;
  auto mixed = model->forward_mixed(batch("ln_tuning_llama"), {"a", "b"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], a[0], 1e-6, 1e-7));
  EXPECT_TRUE(at::allclose(mixed[1], b[1], 1e-6, 1e-7));
}

TEST(LnTuning, MergeAndUnloadKeepsTheTunedNorm) {
  auto model = peft("llama");
  model->load_adapter(kGolden + "/cases/ln_tuning_llama/adapter", "default");
  at::Tensor adapted = logits(*model);
  at::Tensor tuned = model->named_parameters(true)[kNorm + "ln_tuning_layers.default.weight"].detach().clone();
  auto plain = model->merge_and_unload();
  EXPECT_TRUE(at::equal(plain->named_parameters()["model.layers.0.input_layernorm.weight"], tuned));
  EXPECT_TRUE(at::equal(logits(*plain), adapted));
}

TEST(LnTuning, WorksOnGpt2AndT5Norms) {
  for (const auto& [arch, name, targets] :
       std::vector<std::tuple<std::string, std::string, nlohmann::json>>{
           {"gpt2", "ia3_gpt2", {"ln_1", "ln_f"}}, {"t5", "ia3_t5", ".*layer_norm"}}) {
    auto model = peft(arch);
    at::Tensor base = logits(*model, name);
    model->add_adapter("default", config(targets));
    EXPECT_TRUE(at::equal(logits(*model, name), base)) << arch;
    train(*model, name, 3);
    at::Tensor tuned = logits(*model, name);
    EXPECT_FALSE(at::allclose(tuned, base, 1e-4, 1e-4)) << arch;
    std::string dir = ::testing::TempDir() + "peft4j_ln_tuning_" + arch;
    model->save_adapter(dir, "default");
    auto fresh = peft(arch);
    fresh->load_adapter(dir, "default");
    EXPECT_TRUE(at::equal(logits(*fresh, name), tuned)) << arch;
  }
}

TEST(LnTuning, TargetsItCannotCallAreRefused) {
  auto model = peft("llama");
  expect_error([&] { model->add_adapter("x", config({"self_attn"})); }, peft4j::ErrorKind::Unsupported, "self_attn");
  expect_error([&] { model->add_adapter("x", {{"peft_type", "LN_TUNING"}}); }, peft4j::ErrorKind::InvalidArgument,
               "'target_modules'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
