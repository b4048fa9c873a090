// MiSS beyond what the golden case checks: the "bat" and "mini" variants and the shard remainder (in_features not a
// multiple of r) merge to what they compute and unmerge back, the formula on a hand-computed case, identity init,
// two adapters acting together, and refused configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/miss.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using peft4j::tuners::MissLayer;
using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

at::Tensor logits(peft4j::models::Model& model) {
  auto io = peft4j::io::read_safetensors(kGolden + "/cases/miss_llama/io.safetensors");
  at::NoGradGuard no_grad;
  model.eval();
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  return model.forward(in).logits;
}

MissLayer& layer(PeftModel& model, const std::string& path) {
  return dynamic_cast<MissLayer&>(*peft4j::tuners::module_at(model.base_model(), path));
}

// Zero-initialised variants get random blocks so that they change the model.
void randomise(PeftModel& model, const std::string& adapter) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.trainable_parameters())
    if (p.first.find("miss_block." + adapter) != std::string::npos) p.second.normal_(0.0, 0.05);
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

TEST(MissVariants, MergeEqualsUnmergedAndUnmergeRestoresTheBase) {
  struct Variant {
    std::string name;
    nlohmann::json config;
  };
  const std::vector<Variant> variants = {
      {"balance", {{"r", 4}, {"init_weights", false}}},
      {"remainder", {{"r", 6}, {"init_weights", false}}},  // 64 inputs = 10 shards of 6 + 4
      {"bat", {{"r", 4}, {"init_weights", "bat"}}},
      {"mini", {{"r", 4}, {"mini_r", 2}, {"init_weights", "mini"}}},
  };
  for (const auto& v : variants) {
    auto model = peft("llama");
    std::map<std::string, at::Tensor> before;
    for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
    at::Tensor base = logits(*model);
    nlohmann::json config = {{"peft_type", "MISS"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
    config.update(v.config);
    at::manual_seed(5);
    model->add_adapter("default", config);
    randomise(*model, "default");
    at::Tensor unmerged = logits(*model);
    EXPECT_FALSE(at::allclose(unmerged, base)) << v.name;
    model->merge();
    EXPECT_TRUE(at::allclose(logits(*model), unmerged, 1e-4, 1e-5)) << v.name;
    model->unmerge();
    for (const auto& p : model->base_model().named_parameters()) {
      std::string key = p.key();
      if (auto pos = key.find(".base_layer"); pos != std::string::npos) key.erase(pos, 11);
      if (before.count(key)) EXPECT_TRUE(at::allclose(p.value(), before[key], 1e-4, 1e-5)) << v.name << ": " << key;
    }
    EXPECT_TRUE(at::allclose(logits(*model), unmerged, 1e-4, 1e-5)) << v.name;
  }
}

// ΔW[o, i] = D[i mod r, o], on a q_proj with r = 6 (the last shard holds 4 inputs).
TEST(MissFormula, BalancedUpdateSharesTheBlockAcrossInputShards) {
  auto model = peft("llama");
  model->add_adapter("default", {{"peft_type", "MISS"}, {"r", 6}, {"init_weights", false}, {"target_modules", {"q_proj"}}});
  auto& q = layer(*model, "model.layers.0.self_attn.q_proj");
  at::Tensor w = q.base_layer()->named_parameters(false)["weight"].detach().clone();
  at::Tensor d = q.block("default").detach();
  at::Tensor x = at::randn({3, 64});
  at::Tensor expected = at::linear(x, w);
  for (int64_t o = 0; o < 64; ++o)
    for (int64_t i = 0; i < 64; ++i) expected.select(1, o).add_(x.select(1, i) * d[i % 6][o]);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-4, 1e-5));
}

TEST(MissInit, IdentityInitLeavesLogitsUnchangedAndCountsParameters) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  model->add_adapter("default", {{"peft_type", "MISS"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}});
  EXPECT_TRUE(at::equal(logits(*model), base));
  EXPECT_EQ(model->trainable_parameter_count(), 768);  // golden miss_llama: [4, out] on q (64) and v (32), 2 layers
}

TEST(MissAdapters, TwoActiveAdaptersAddTheirUpdates) {
  auto model = peft("llama");
  at::manual_seed(7);
  model->add_adapter("one", {{"peft_type", "MISS"}, {"r", 4}, {"init_weights", false}, {"target_modules", {"q_proj"}}});
  model->add_adapter("two", {{"peft_type", "MISS"}, {"r", 8}, {"init_weights", false}, {"target_modules", {"q_proj"}}});
  auto& q = layer(*model, "model.layers.1.self_attn.q_proj");
  at::Tensor x = at::randn({2, 64});
  at::NoGradGuard no_grad;
  model->set_active_adapters({"one"});
  at::Tensor one = q.forward(x) - q.base_forward(x);
  model->set_active_adapters({"two"});
  at::Tensor two = q.forward(x) - q.base_forward(x);
  model->set_active_adapters({"one", "two"});
  at::Tensor base = q.base_forward(x);
  EXPECT_TRUE(at::allclose(q.forward(x), base + one + two, 1e-4, 1e-5));
  model->merge({"one", "two"});
  EXPECT_TRUE(at::allclose(q.base_forward(x), base + one + two, 1e-4, 1e-5));  // both folded into the weight
  model->unmerge();
  EXPECT_TRUE(at::allclose(q.base_forward(x), base, 1e-4, 1e-5));
  model->delete_adapter("one");
  model->set_adapter("two");
  EXPECT_TRUE(at::allclose(q.forward(x) - q.base_forward(x), two, 1e-4, 1e-5));
}

TEST(MissConfig, BadValuesAreRefusedByField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json changes, const std::string& name = "x") {
    nlohmann::json config = {{"peft_type", "MISS"}, {"r", 4}, {"target_modules", {"q_proj"}}};
    for (auto it = changes.begin(); it != changes.end(); ++it) config[it.key()] = it.value();
    model->add_adapter(name, config);
  };
  using peft4j::ErrorKind;
  expect_message([&] { add({{"r", 0}}); }, ErrorKind::InvalidArgument, "'r'");
  expect_message([&] { add({{"r", 65}}); }, ErrorKind::InvalidArgument, "in_features");
  expect_message([&] { add({{"init_weights", "fancy"}}); }, ErrorKind::InvalidArgument, "'init_weights'");
  expect_message([&] { add({{"r", 6}, {"init_weights", "bat"}}); }, ErrorKind::InvalidArgument, "divisible");
  expect_message([&] { add({{"mini_r", 5}, {"init_weights", "mini"}}); }, ErrorKind::InvalidArgument, "'mini_r'");
  expect_message([&] { add({{"miss_dropout", 1.0}}); }, ErrorKind::InvalidArgument, "'miss_dropout'");
  expect_message([&] { add({{"bias", "some"}}); }, ErrorKind::InvalidArgument, "'bias'");
  EXPECT_TRUE(model->adapter_names().empty());
  add({}, "first");
  expect_message([&] { add({{"init_weights", "bat"}}, "second"); }, ErrorKind::Unsupported, "'init_weights'");
  EXPECT_EQ(model->adapter_names(), std::vector<std::string>{"first"});
  // GPT-2's Conv1D is not a MiSS target in PEFT.
  auto gpt2 = peft("gpt2");
  expect_message([&] { gpt2->add_adapter("x", {{"peft_type", "MISS"}, {"target_modules", {"c_attn"}}}); },
                 ErrorKind::Unsupported, "c_attn");
}

}  // namespace
