// Trainable tokens beyond what the golden case checks (its batch holds none of its tokens, so its gradients are
// zero): only the listed rows change and get gradients, merge writes them into the embedding and unmerge restores it
// exactly, a tied lm_head follows the same rows (one parameter, both keys saved, as PEFT), the default target is the
// input embedding, overlapping adapters cannot act together, bad indices are refused by field.
#include <gtest/gtest.h>
#include <unistd.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/tuners/trainable_tokens.h"

namespace {

using peft4j::tuners::PeftModel;
using peft4j::tuners::TrainableTokensLayer;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::models::ModelInputs inputs(bool labels) {
  auto io = peft4j::io::read_safetensors(kGolden + "/cases/trainable_tokens_llama/io.safetensors");
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

TrainableTokensLayer* layer_at(PeftModel& model, const std::string& path) {
  return dynamic_cast<TrainableTokensLayer*>(peft4j::tuners::module_at(model.base_model(), path).get());
}

nlohmann::json tokens(const std::vector<int64_t>& indices, bool init_weights = false) {
  return {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", indices}, {"init_weights", init_weights}};
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

TEST(TrainableTokensRows, OnlyListedRowsTrainAndMergeWritesThem) {
  auto model = peft("llama");
  at::Tensor weight = model->base_model().named_parameters()["model.embed_tokens.weight"].detach().clone();
  at::Tensor base = logits(*model);
  // 165 and 89 occur in the batch, 3 does not
  model->add_adapter("default", tokens({165, 89, 3}));
  EXPECT_EQ(model->adapter_config("default")["target_modules"], "model.embed_tokens");
  EXPECT_EQ(model->trainable_parameter_count(), 3 * 64);
  auto* layer = layer_at(*model, "model.embed_tokens");
  ASSERT_NE(layer, nullptr);
  at::Tensor delta = layer->delta("default");
  {
    at::NoGradGuard no_grad;
    at::Tensor rows = model->embed(at::tensor({165, 10, 3}, at::kLong));
    EXPECT_TRUE(at::equal(rows[0], delta[0]));
    EXPECT_TRUE(at::equal(rows[1], weight[10]));
    EXPECT_TRUE(at::equal(rows[2], delta[2]));
  }
  model->train();
  model->forward(inputs(true)).loss.backward();
  at::Tensor grad_norms = delta.grad().norm(2, {1});
  EXPECT_GT(grad_norms[0].item<double>(), 0);
  EXPECT_GT(grad_norms[1].item<double>(), 0);
  EXPECT_EQ(grad_norms[2].item<double>(), 0);

  at::Tensor adapted = logits(*model);
  EXPECT_FALSE(at::allclose(adapted, base));
  model->merge();
  at::Tensor merged_weight = layer->weight();
  EXPECT_TRUE(at::equal(merged_weight.index_select(0, at::tensor({165, 89, 3}, at::kLong)), delta.detach()));
  EXPECT_TRUE(at::equal(merged_weight[10], weight[10]));
  EXPECT_TRUE(at::equal(logits(*model), adapted));
  model->unmerge();
  EXPECT_TRUE(at::equal(layer->weight(), weight));
  model->set_disabled(true);
  EXPECT_TRUE(at::equal(logits(*model), base));
}

// qwen2 ties lm_head to embed_tokens: PEFT wraps both, the lm_head layer reading the embedding layer's rows; the
// parameter is listed once (under the embedding) and saved under both keys.
TEST(TrainableTokensTied, TiedLmHeadFollowsTheRows) {
  auto model = peft("qwen2");
  model->add_adapter("default", tokens({3, 5, 7, 11}));
  EXPECT_EQ(model->adapter_config("default")["target_modules"], "model.embed_tokens");
  auto* embed = layer_at(*model, "model.embed_tokens");
  auto* head = layer_at(*model, "lm_head");
  ASSERT_TRUE(embed && head);
  EXPECT_EQ(head->delta("default").unsafeGetTensorImpl(), embed->delta("default").unsafeGetTensorImpl());
  auto trainable = model->trainable_parameters();
  ASSERT_EQ(trainable.size(), 1u);
  EXPECT_EQ(trainable[0].first, "base_model.model.model.embed_tokens.trainable_tokens_delta.default");
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.size(), 2u);
  EXPECT_TRUE(saved.count("base_model.model.model.embed_tokens.trainable_tokens_delta"));
  EXPECT_TRUE(saved.count("base_model.model.lm_head.trainable_tokens_delta"));
  {
    at::NoGradGuard no_grad;
    at::Tensor h = at::randn({2, 64});
    at::Tensor w = embed->merged_weight({"default"});
    EXPECT_TRUE(at::allclose(head->forward(h), at::linear(h, w), 1e-5, 1e-6));
  }
  std::string out = ::testing::TempDir() + "peft4j_tt_" + std::to_string(::getpid()) + "_tied";
  model->save_adapter(out, "default");
  auto fresh = peft("qwen2");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh), logits(*model)));

  auto gpt2 = peft("gpt2");
  gpt2->add_adapter("default", tokens({1, 2}));
  EXPECT_EQ(gpt2->adapter_config("default")["target_modules"], "transformer.wte");
  EXPECT_NE(layer_at(*gpt2, "lm_head"), nullptr);
}

TEST(TrainableTokensInit, IdentityInitLeavesLogitsUnchanged) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  model->add_adapter("default", tokens({165, 89}, /*init_weights=*/true));
  EXPECT_TRUE(at::equal(logits(*model), base));
}

TEST(TrainableTokensAdapters, OverlappingRowsCannotActTogether) {
  auto model = peft("llama");
  model->add_adapter("one", tokens({165, 89}));
  model->add_adapter("two", tokens({89, 225}));
  model->add_adapter("three", tokens({225}));
  model->set_active_adapters({"one", "two"});
  expect_message([&] { logits(*model); }, peft4j::ErrorKind::InvalidArgument, "overlap");
  model->set_active_adapters({"one", "three"});
  auto* layer = layer_at(*model, "model.embed_tokens");
  at::NoGradGuard no_grad;
  at::Tensor rows = model->embed(at::tensor({165, 225}, at::kLong));
  EXPECT_TRUE(at::equal(rows[0], layer->delta("one")[0]));
  EXPECT_TRUE(at::equal(rows[1], layer->delta("three")[0]));
}

TEST(TrainableTokensConfig, BadIndicesAreRefusedByField) {
  auto model = peft("llama");
  using peft4j::ErrorKind;
  expect_message([&] { model->add_adapter("x", tokens({3, 256})); }, ErrorKind::InvalidArgument, "'token_indices'");
  expect_message([&] { model->add_adapter("x", tokens({-1})); }, ErrorKind::InvalidArgument, "'token_indices'");
  expect_message([&] { model->add_adapter("x", tokens({4, 4})); }, ErrorKind::InvalidArgument, "twice");
  expect_message([&] { model->add_adapter("x", {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", "3"}}); },
                 ErrorKind::InvalidArgument, "'token_indices'");
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_EQ(layer_at(*model, "model.embed_tokens"), nullptr);
}

}  // namespace
