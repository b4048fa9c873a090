// BERT and T5 against transformers 5.17 (golden cases) and against plain-tensor recomputations.
#include <gtest/gtest.h>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <string>

#include "peft4j/error.h"
#include "peft4j/models/bert.h"
#include "peft4j/models/model.h"
#include "peft4j/models/t5.h"
#include "peft4j/safetensors.h"

namespace {

using peft4j::models::Model;
using peft4j::models::ModelInputs;
using peft4j::models::ModelOutput;
using peft4j::models::PastKeyValues;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

peft4j::io::TensorMap case_io(const std::string& name) {
  return peft4j::io::read_safetensors(kGolden + "/cases/" + name + "/io.safetensors");
}

peft4j::io::TensorMap adapter(const std::string& name) {
  return peft4j::io::read_safetensors(kGolden + "/cases/" + name + "/adapter/adapter_model.safetensors");
}

std::shared_ptr<Model> golden_model(const std::string& arch) {
  auto model = peft4j::models::load_model(kGolden + "/models/" + arch);
  model->eval();
  return model;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The golden tolerance (rtol 1e-4, atol 1e-5), reporting the largest deviation.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, const std::string& what,
                  double rtol = 1e-4, double atol = 1e-5) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  at::Tensor a = actual.detach().to(at::kFloat).cpu(), e = expected.to(at::kFloat).cpu();
  EXPECT_TRUE(at::allclose(a, e, rtol, atol)) << what << ": max abs error " << max_abs_diff(a, e);
  std::cout << "[ max abs error ] " << what << ": " << max_abs_diff(a, e) << std::endl;
}

ModelOutput run(Model& model, const ModelInputs& inputs) {
  at::NoGradGuard no_grad;
  return model.forward(inputs);
}

// PEFT's prefix layout: prompt_embeddings [P, layers * 2 * heads * head_dim] -> [2 * layers, B, heads, P, head_dim].
at::Tensor prefix_tensor(const at::Tensor& prompt_embeddings, int64_t batch, int64_t layers, int64_t heads,
                         int64_t head_dim, int64_t submodules) {
  int64_t tokens = prompt_embeddings.size(0);
  at::Tensor kv = prompt_embeddings.repeat({batch, 1, 1}).view({batch, tokens, layers * 2, heads, head_dim});
  if (submodules == 2) kv = at::cat({kv, kv}, 2);
  return kv.permute({2, 0, 3, 1, 4});
}

// Fills every parameter of a freshly created model with seeded random values (layer norms near 1).
void randomize(Model& model, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    if (p.key().find("LayerNorm") != std::string::npos || p.key().find("layer_norm") != std::string::npos)
      p.value().uniform_(0.8, 1.2);
    else
      p.value().normal_(0.0, 0.3);
  }
}

nlohmann::json tiny_bert_config(int64_t num_labels) {
  return {{"model_type", "bert"},        {"vocab_size", 50},         {"hidden_size", 16},
          {"num_hidden_layers", 2},      {"num_attention_heads", 2}, {"intermediate_size", 24},
          {"hidden_act", "gelu_new"},    {"hidden_dropout_prob", 0.0}, {"attention_probs_dropout_prob", 0.0},
          {"max_position_embeddings", 32}, {"type_vocab_size", 2},     {"num_labels", num_labels}};
}

nlohmann::json tiny_t5_config(const std::string& feed_forward_proj, bool tie) {
  return {{"model_type", "t5"},     {"vocab_size", 40},   {"d_model", 16},         {"d_kv", 8},
          {"d_ff", 24},             {"num_layers", 2},    {"num_decoder_layers", 3}, {"num_heads", 2},
          {"dropout_rate", 0.0},    {"feed_forward_proj", feed_forward_proj},
          {"relative_attention_num_buckets", 8},          {"relative_attention_max_distance", 12},
          {"decoder_start_token_id", 0}, {"pad_token_id", 0}, {"tie_word_embeddings", tie}};
}

// ---------------------------------------------------------------- BERT

TEST(BertT5Golden, BertBaseLogitsMatchTransformers) {
  auto model = golden_model("bert");
  auto io = case_io("lora_bert_seqcls");
  ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  ASSERT_EQ(in.attention_mask.min().item<int64_t>(), 0) << "the golden batch should contain padding";
  expect_close(run(*model, in).logits, io.at("base_logits"), "bert base_logits");
}

TEST(BertT5Golden, BertPrefixTuningMatchesPeft) {
  // PEFT passes a DynamicCache of prefixes; BERT offsets positions by the prefix length; the prefix is attended.
  auto model = golden_model("bert");
  auto io = case_io("prefix_bert_seqcls");
  auto weights = adapter("prefix_bert_seqcls");
  {
    at::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().rfind("classifier.", 0) == 0) p.value().copy_(weights.at("base_model." + p.key()));
    }
  }
  ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  in.labels = io.at("labels");
  int64_t batch = in.input_ids.size(0);
  at::Tensor kv = prefix_tensor(weights.at("prompt_embeddings"), batch, 2, 4, 16, 1);
  PastKeyValues past;
  for (int64_t layer = 0; layer < 2; ++layer) past.encoder_self_attn.push_back({kv[2 * layer], kv[2 * layer + 1]});
  in.past_key_values = past;
  ModelOutput out = run(*model, in);
  expect_close(out.logits, io.at("logits"), "bert prefix logits");
  expect_close(out.loss.reshape({1}), io.at("loss"), "bert prefix loss");
}

TEST(BertT5Bert, CrossEntropyLossEqualsPlainComputation) {
  auto model = golden_model("bert");
  auto io = case_io("lora_bert_seqcls");
  ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  in.labels = io.at("labels");
  ModelOutput out = run(*model, in);
  at::Tensor log_probs = at::log_softmax(out.logits, -1);
  at::Tensor expected = -log_probs.gather(1, in.labels.unsqueeze(1)).mean();
  EXPECT_NEAR(out.loss.item<double>(), expected.item<double>(), 1e-6);
}

TEST(BertT5Bert, RegressionAndMultiLabelLosses) {
  auto regression = peft4j::models::create_model(tiny_bert_config(1));
  randomize(*regression, 1);
  regression->eval();
  ModelInputs in;
  in.input_ids = at::randint(0, 50, {3, 7}, at::kLong);
  in.labels = at::tensor({0.5f, -1.0f, 2.0f});
  ModelOutput out = run(*regression, in);
  ASSERT_EQ(out.logits.sizes(), (at::IntArrayRef{3, 1}));
  at::Tensor expected = (out.logits.squeeze(1) - in.labels).pow(2).mean();
  EXPECT_NEAR(out.loss.item<double>(), expected.item<double>(), 1e-6);

  auto multi = peft4j::models::create_model(tiny_bert_config(4));
  randomize(*multi, 2);
  multi->eval();
  in.labels = at::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f, 0.f, 0.f}).view({3, 4});
  out = run(*multi, in);
  at::Tensor x = out.logits, y = in.labels;
  at::Tensor bce = -(y * at::log_sigmoid(x) + (1 - y) * at::log_sigmoid(-x)).mean();
  EXPECT_NEAR(out.loss.item<double>(), bce.item<double>(), 1e-6);

  // Integer labels with several classes: single-label cross-entropy.
  in.labels = at::tensor({3, 0, 2}, at::kLong);
  out = run(*multi, in);
  at::Tensor ce = -at::log_softmax(out.logits, -1).gather(1, in.labels.unsqueeze(1)).mean();
  EXPECT_NEAR(out.loss.item<double>(), ce.item<double>(), 1e-6);
}

TEST(BertT5Bert, InputsEmbedsEqualsInputIdsAndTokenTypesMatter) {
  auto model = peft4j::models::create_model(tiny_bert_config(3));
  randomize(*model, 3);
  model->eval();
  ModelInputs by_ids;
  by_ids.input_ids = at::randint(0, 50, {2, 6}, at::kLong);
  by_ids.attention_mask = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, at::kLong).view({2, 6});
  ModelInputs by_embeds = by_ids;
  by_embeds.input_ids = at::Tensor();
  by_embeds.inputs_embeds = model->embed(by_ids.input_ids);
  at::Tensor a = run(*model, by_ids).logits, b = run(*model, by_embeds).logits;
  EXPECT_TRUE(at::equal(a, b));

  // Padding is invisible: the padded row equals its unpadded prefix.
  ModelInputs trimmed;
  trimmed.input_ids = by_ids.input_ids.slice(0, 1, 2).slice(1, 0, 4);
  expect_close(run(*model, trimmed).logits, a.slice(0, 1, 2), "bert padding", 1e-5, 1e-6);

  ModelInputs typed = by_ids;
  typed.token_type_ids = at::ones({2, 6}, at::kLong);
  EXPECT_FALSE(at::allclose(run(*model, typed).logits, a));
}

TEST(BertT5Bert, ModuleNamesAreHfKeys) {
  auto model = golden_model("bert");
  auto modules = model->named_modules();
  for (const char* name : {"bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.output.dense",
                           "bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense",
                           "bert.pooler.dense", "classifier"}) {
    ASSERT_TRUE(modules.contains(name)) << name;
    EXPECT_NE(modules[name]->as<torch::nn::LinearImpl>(), nullptr) << name;
  }
  EXPECT_NE(modules["bert.embeddings.word_embeddings"]->as<torch::nn::EmbeddingImpl>(), nullptr);
  EXPECT_EQ(&model->input_embeddings(), modules["bert.embeddings.word_embeddings"].get());
  EXPECT_EQ(model->task(), peft4j::models::Task::SequenceClassification);
}

TEST(BertT5Bert, UnsupportedActivationIsNamed) {
  auto config = tiny_bert_config(2);
  config["hidden_act"] = "prelu";
  try {
    peft4j::models::create_model(config);
    FAIL() << "expected an error";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), peft4j::ErrorKind::Unsupported);
    EXPECT_NE(std::string(e.what()).find("prelu"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- T5

peft4j::models::T5ForConditionalGeneration& as_t5(Model& model) {
  return dynamic_cast<peft4j::models::T5ForConditionalGeneration&>(model);
}

ModelInputs golden_inputs(const peft4j::io::TensorMap& io) {
  ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  in.labels = io.at("labels");
  return in;
}

TEST(BertT5Golden, T5BaseLogitsMatchTransformers) {
  auto model = golden_model("t5");
  for (const char* name : {"lora_t5", "ia3_t5", "prefix_t5", "prompt_tuning_t5"}) {
    auto io = case_io(name);
    ModelInputs in = golden_inputs(io);
    ASSERT_EQ(in.attention_mask.min().item<int64_t>(), 0) << name << " should contain padding";
    expect_close(run(*model, in).logits, io.at("base_logits"), std::string(name) + " base_logits");
  }
}

TEST(BertT5Golden, T5PrefixTuningMatchesPeft) {
  // PEFT builds per-layer (self k, self v, cross k, cross v) from the doubled prefix tensor; transformers 5.17
  // uses only the self-attention part (PEFT empties the cross-attention cache, the encoder drops the cache).
  auto model = golden_model("t5");
  auto io = case_io("prefix_t5");
  ModelInputs in = golden_inputs(io);
  at::Tensor kv = prefix_tensor(adapter("prefix_t5").at("prompt_embeddings"), in.input_ids.size(0), 2, 4, 16, 2);
  PastKeyValues past;
  for (int64_t layer = 0; layer < 2; ++layer) past.self_attn.push_back({kv[4 * layer], kv[4 * layer + 1]});
  in.past_key_values = past;
  ModelOutput out = run(*model, in);
  expect_close(out.logits, io.at("logits"), "t5 prefix logits");
  expect_close(out.loss.reshape({1}), io.at("loss"), "t5 prefix loss");
}

TEST(BertT5Golden, T5PromptTuningMatchesPeft) {
  auto model = golden_model("t5");
  auto io = case_io("prompt_tuning_t5");
  ModelInputs in = golden_inputs(io);
  int64_t batch = in.input_ids.size(0), tokens = 5;
  at::Tensor prompts = adapter("prompt_tuning_t5").at("prompt_embeddings").slice(0, 0, tokens).expand({batch, -1, -1});
  in.inputs_embeds = at::cat({prompts, model->embed(in.input_ids)}, 1);
  in.attention_mask = at::cat({at::ones({batch, tokens}, at::kLong), in.attention_mask}, 1);
  in.input_ids = at::Tensor();
  ModelOutput out = run(*model, in);
  expect_close(out.logits, io.at("logits"), "t5 prompt tuning logits");
  expect_close(out.loss.reshape({1}), io.at("loss"), "t5 prompt tuning loss");
}

TEST(BertT5T5, LossEqualsPlainComputationIgnoringMinus100) {
  auto model = golden_model("t5");
  ModelInputs in = golden_inputs(case_io("lora_t5"));
  in.labels = in.labels.clone();
  in.labels[1][3] = -100;
  in.labels[1][4] = -100;
  ModelOutput out = run(*model, in);
  at::Tensor log_probs = at::log_softmax(out.logits, -1).view({-1, out.logits.size(-1)});
  at::Tensor flat = in.labels.view({-1});
  at::Tensor valid = flat != -100;
  at::Tensor picked = log_probs.index({valid}).gather(1, flat.index({valid}).unsqueeze(1));
  EXPECT_NEAR(out.loss.item<double>(), (-picked.mean()).item<double>(), 1e-6);

  // -100 becomes pad in the shifted decoder inputs.
  at::Tensor shifted = as_t5(*model).shift_right(in.labels);
  EXPECT_EQ(shifted[1][0].item<int64_t>(), 0);
  EXPECT_EQ(shifted[1][4].item<int64_t>(), 0);
  EXPECT_TRUE(at::equal(shifted.slice(1, 1, 4).slice(0, 0, 1), in.labels.slice(1, 0, 3).slice(0, 0, 1)));
}

// Greedy-style step-by-step decoding with the cache equals one pass over the whole decoder sequence.
void expect_incremental_equals_full(Model& model, const at::Tensor& input_ids, const at::Tensor& mask,
                                    const at::Tensor& decoder_ids, const std::string& what) {
  ModelInputs full;
  full.input_ids = input_ids;
  full.attention_mask = mask;
  full.decoder_input_ids = decoder_ids;
  at::Tensor expected = run(model, full).logits;

  ModelInputs step;
  step.input_ids = input_ids;
  step.attention_mask = mask;
  step.decoder_input_ids = decoder_ids.slice(1, 0, 1);
  step.use_cache = true;
  ModelOutput out = run(model, step);
  ASSERT_TRUE(out.past_key_values.has_value());
  std::vector<at::Tensor> pieces{out.logits};
  at::Tensor encoder = out.encoder_hidden_states;
  for (int64_t t = 1; t < decoder_ids.size(1); ++t) {
    ModelInputs next;
    next.attention_mask = mask;
    next.encoder_hidden_states = encoder;
    next.decoder_input_ids = decoder_ids.slice(1, t, t + 1);
    next.past_key_values = out.past_key_values;
    next.use_cache = true;
    out = run(model, next);
    EXPECT_EQ(out.past_key_values->length(), t + 1);
    pieces.push_back(out.logits);
  }
  expect_close(at::cat(pieces, 1), expected, what, 1e-5, 1e-5);
}

TEST(BertT5T5, IncrementalDecodingEqualsFullRecomputation) {
  auto model = golden_model("t5");
  auto io = case_io("lora_t5");
  expect_incremental_equals_full(*model, io.at("input_ids"), io.at("attention_mask"),
                                 as_t5(*model).shift_right(io.at("labels")), "t5 golden incremental");

  // A gated-gelu model with more decoder than encoder layers, untied lm_head and no output rescale (T5 v1.1).
  auto gated = peft4j::models::create_model(tiny_t5_config("gated-gelu", false));
  randomize(*gated, 4);
  gated->eval();
  at::Tensor ids = at::randint(2, 40, {2, 7}, at::kLong);
  at::Tensor mask = at::ones({2, 7}, at::kLong);
  mask[0].slice(0, 5).zero_();
  expect_incremental_equals_full(*gated, ids, mask, at::randint(0, 40, {2, 6}, at::kLong), "t5 gated incremental");
}

TEST(BertT5T5, DecoderPrefixThenCacheEqualsPrefixOverWholeSequence) {
  // self_attn holds "positions before the current tokens" whether it came from a prefix or from the cache.
  auto model = golden_model("t5");
  auto io = case_io("prefix_t5");
  at::Tensor kv = prefix_tensor(adapter("prefix_t5").at("prompt_embeddings"), 2, 2, 4, 16, 2);
  PastKeyValues prefix;
  for (int64_t layer = 0; layer < 2; ++layer) prefix.self_attn.push_back({kv[4 * layer], kv[4 * layer + 1]});
  ModelInputs full = golden_inputs(io);
  full.past_key_values = prefix;
  at::Tensor expected = run(*model, full).logits;

  ModelInputs first = golden_inputs(io);
  first.labels = at::Tensor();
  at::Tensor decoder_ids = as_t5(*model).shift_right(io.at("labels"));
  first.decoder_input_ids = decoder_ids.slice(1, 0, 2);
  first.past_key_values = prefix;
  first.use_cache = true;
  ModelOutput a = run(*model, first);
  EXPECT_EQ(a.past_key_values->length(), 4 + 2);
  ModelInputs rest;
  rest.attention_mask = io.at("attention_mask");
  rest.encoder_hidden_states = a.encoder_hidden_states;
  rest.decoder_input_ids = decoder_ids.slice(1, 2);
  rest.decoder_attention_mask = at::ones({2, 3}, at::kLong);
  rest.past_key_values = a.past_key_values;
  ModelOutput b = run(*model, rest);
  expect_close(at::cat({a.logits, b.logits}, 1), expected, "t5 prefix + cache", 1e-5, 1e-5);
}

TEST(BertT5T5, InputsEmbedsEqualsInputIds) {
  auto model = golden_model("t5");
  auto io = case_io("lora_t5");
  ModelInputs by_ids = golden_inputs(io);
  ModelInputs by_embeds = by_ids;
  by_embeds.input_ids = at::Tensor();
  by_embeds.inputs_embeds = model->embed(by_ids.input_ids);
  by_embeds.labels = at::Tensor();
  by_embeds.decoder_inputs_embeds = model->embed(as_t5(*model).shift_right(by_ids.labels));
  EXPECT_TRUE(at::equal(run(*model, by_ids).logits, run(*model, by_embeds).logits));
}

TEST(BertT5T5, EncoderPrefixMaskFormsAgreeAndPrefixMatters) {
  auto model = golden_model("t5");
  ModelInputs in = golden_inputs(case_io("lora_t5"));
  at::manual_seed(5);
  PastKeyValues prefix;
  for (int layer = 0; layer < 2; ++layer)
    prefix.encoder_self_attn.push_back({at::randn({2, 4, 3, 16}), at::randn({2, 4, 3, 16})});
  ModelInputs short_mask = in;
  short_mask.past_key_values = prefix;
  ModelInputs long_mask = short_mask;
  long_mask.attention_mask = at::cat({at::ones({2, 3}, at::kLong), in.attention_mask}, 1);
  at::Tensor a = run(*model, short_mask).logits, b = run(*model, long_mask).logits;
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::allclose(a, run(*model, in).logits));
}

TEST(BertT5T5, ModuleNamesTiesAndConfigSemantics) {
  auto model = golden_model("t5");
  auto modules = model->named_modules();
  for (const char* name : {"encoder.block.0.layer.0.SelfAttention.q", "decoder.block.1.layer.1.EncDecAttention.k",
                           "decoder.block.0.layer.2.DenseReluDense.wi", "encoder.block.1.layer.1.DenseReluDense.wo",
                           "lm_head"}) {
    ASSERT_TRUE(modules.contains(name)) << name;
    EXPECT_NE(modules[name]->as<torch::nn::LinearImpl>(), nullptr) << name;
  }
  for (const char* name : {"shared", "encoder.embed_tokens", "decoder.embed_tokens",
                           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias"})
    EXPECT_NE(modules[name]->as<torch::nn::EmbeddingImpl>(), nullptr) << name;
  EXPECT_FALSE(modules.contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias"));
  auto params = model->named_parameters();
  EXPECT_FALSE(params.contains("lm_head.bias"));
  EXPECT_TRUE(params["lm_head.weight"].is_same(params["shared.weight"]));
  EXPECT_TRUE(params["decoder.embed_tokens.weight"].is_same(params["shared.weight"]));
  EXPECT_EQ(&model->input_embeddings(), modules["shared"].get());
  EXPECT_EQ(model->task(), peft4j::models::Task::Seq2SeqLM);

  auto gated = peft4j::models::create_model(tiny_t5_config("gated-gelu", false));
  auto& t5 = as_t5(*gated);
  EXPECT_EQ(t5.t5_config().dense_act_fn, "gelu_new");
  EXPECT_FALSE(t5.t5_config().scale_decoder_outputs);
  auto gated_params = gated->named_parameters();
  EXPECT_TRUE(gated_params.contains("decoder.block.2.layer.2.DenseReluDense.wi_1.weight"));
  EXPECT_FALSE(gated_params["lm_head.weight"].is_same(gated_params["shared.weight"]));
  // transformers 5.17 ties an untied T5's head when the checkpoint has no lm_head.weight, and keeps it otherwise.
  std::map<std::string, at::Tensor> weights;
  for (const auto& p : gated->named_parameters()) weights[p.key()] = at::randn(p.value().sizes());
  weights.erase("encoder.embed_tokens.weight");
  weights.erase("decoder.embed_tokens.weight");
  peft4j::models::load_weights(*gated, weights, "with head");
  EXPECT_FALSE(gated->named_parameters()["lm_head.weight"].is_same(gated->named_parameters()["shared.weight"]));
  EXPECT_TRUE(at::equal(gated->named_parameters()["lm_head.weight"], weights["lm_head.weight"]));
  weights.erase("lm_head.weight");
  peft4j::models::load_weights(*gated, weights, "without head");
  EXPECT_TRUE(gated->named_parameters()["lm_head.weight"].is_same(gated->named_parameters()["shared.weight"]));

  auto config = tiny_t5_config("gated-gelu-x", true);
  EXPECT_THROW(peft4j::models::create_model(config), peft4j::Error);
}

TEST(BertT5T5, ScaleDecoderOutputsFollowsConfig) {
  // Same weights, one config with the d_model^-0.5 rescale: logits differ by exactly that factor.
  auto config = tiny_t5_config("relu", true);
  auto scaled = peft4j::models::create_model(config);
  config["scale_decoder_outputs"] = false;
  auto plain = peft4j::models::create_model(config);
  randomize(*scaled, 6);
  {
    at::NoGradGuard no_grad;
    auto source = scaled->named_parameters();
    for (auto& p : plain->named_parameters()) p.value().copy_(source[p.key()]);
  }
  ModelInputs in;
  in.input_ids = at::randint(0, 40, {1, 5}, at::kLong);
  in.decoder_input_ids = at::randint(0, 40, {1, 3}, at::kLong);
  expect_close(run(*scaled, in).logits, run(*plain, in).logits / 4.0, "t5 scale_decoder_outputs", 1e-5, 1e-6);
}

ModelInputs to_device(ModelInputs in, at::Device device) {
  for (at::Tensor* t : {&in.input_ids, &in.attention_mask, &in.labels})
    if (t->defined()) *t = t->to(device);
  return in;
}

TEST(BertT5T5, HalfPrecisionWeightsRun) {
  // Compute follows the parameters' dtype and device. libtorch 1.13 has no f16 matmul on CPU: f16 on CUDA only.
  const at::Device device = at::hasCUDA() ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  std::vector<at::ScalarType> dtypes{at::kBFloat16};
  if (device.is_cuda()) dtypes.push_back(at::kHalf);
  for (auto dtype : dtypes) {
    auto model = golden_model("t5");
    ModelInputs in = golden_inputs(case_io("lora_t5"));
    at::Tensor reference = run(*model, in).logits;
    model->to(device, dtype);
    ModelOutput out = run(*model, to_device(in, device));
    EXPECT_EQ(out.logits.scalar_type(), dtype);
    EXPECT_EQ(out.logits.device(), device);
    EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
    EXPECT_LT(max_abs_diff(out.logits.cpu(), reference), 0.1) << c10::toString(dtype);

    auto bert = golden_model("bert");
    ModelInputs bert_in = golden_inputs(case_io("lora_bert_seqcls"));
    at::Tensor bert_reference = run(*bert, bert_in).logits;
    bert->to(device, dtype);
    at::Tensor bert_logits = run(*bert, to_device(bert_in, device)).logits;
    EXPECT_EQ(bert_logits.scalar_type(), dtype);
    EXPECT_LT(max_abs_diff(bert_logits.cpu(), bert_reference), 0.1) << c10::toString(dtype);
  }
}

TEST(BertT5T5, TrainingModeGradientsReachSharedWeightsAndBias) {
  auto model = golden_model("t5");
  ModelInputs in = golden_inputs(case_io("lora_t5"));
  at::Tensor eval_loss = run(*model, in).loss;
  model->train();
  ModelOutput out = model->forward(in);
  // dropout_rate is 0 in the golden config, so training mode computes the same loss.
  EXPECT_NEAR(out.loss.item<double>(), eval_loss.item<double>(), 1e-6);
  out.loss.backward();
  auto params = model->named_parameters();
  for (const char* name : {"shared.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                           "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                           "decoder.block.1.layer.1.EncDecAttention.k.weight", "encoder.final_layer_norm.weight"}) {
    at::Tensor grad = params[name].grad();
    ASSERT_TRUE(grad.defined()) << name;
    EXPECT_TRUE(at::isfinite(grad).all().item<bool>()) << name;
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << name;
  }
}

TEST(BertT5T5, DropoutAppliesOnlyInTraining) {
  auto t5_config = tiny_t5_config("relu", true);
  t5_config["dropout_rate"] = 0.3;
  auto bert_config = tiny_bert_config(3);
  bert_config["attention_probs_dropout_prob"] = 0.3;
  bert_config["hidden_dropout_prob"] = 0.3;
  for (const auto& config : {t5_config, bert_config}) {
    auto model = peft4j::models::create_model(config);
    randomize(*model, 7);
    ModelInputs in;
    in.input_ids = at::randint(1, 40, {2, 5}, at::kLong);
    in.decoder_input_ids = at::randint(1, 40, {2, 4}, at::kLong);
    if (model->model_type() == "bert") in.decoder_input_ids = at::Tensor();
    model->eval();
    EXPECT_TRUE(at::equal(run(*model, in).logits, run(*model, in).logits));
    model->train();
    EXPECT_FALSE(at::allclose(run(*model, in).logits, run(*model, in).logits)) << model->model_type();
  }
}

// ---------------------------------------------------------------- loading

void expect_load_error(const std::string& arch, const std::function<void(peft4j::io::TensorMap&)>& corrupt,
                       const std::string& needle) {
  auto tensors = peft4j::io::read_safetensors(kGolden + "/models/" + arch + "/model.safetensors");
  corrupt(tensors);
  auto model = golden_model(arch);
  try {
    peft4j::models::load_weights(*model, tensors, "corrupted " + arch);
    FAIL() << "expected an error naming " << needle;
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), peft4j::ErrorKind::Format);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(BertT5Load, MissingAndMisshapenTensorsAreNamed) {
  const std::string q = "encoder.block.1.layer.0.SelfAttention.q.weight";
  expect_load_error("t5", [&](auto& t) { t.erase(q); }, "missing tensor '" + q + "'");
  expect_load_error("t5", [&](auto& t) { t[q] = at::zeros({64, 63}); }, "'" + q + "' has shape");
  expect_load_error("t5", [&](auto& t) { t.erase("shared.weight"); }, "missing tensor 'shared.weight'");
  const std::string key = "bert.encoder.layer.0.attention.self.key.bias";
  expect_load_error("bert", [&](auto& t) { t.erase(key); }, "missing tensor '" + key + "'");
  expect_load_error(
      "bert", [&](auto& t) { t["classifier.weight"] = at::zeros({2, 64}); }, "'classifier.weight' has shape");
}

TEST(BertT5Load, TiedAndHeadKeysMayBeAbsentOrPresent) {
  auto tensors = peft4j::io::read_safetensors(kGolden + "/models/t5/model.safetensors");
  for (const char* key : {"lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"})
    tensors[key] = tensors.at("shared.weight");
  auto model = golden_model("t5");
  EXPECT_NO_THROW(peft4j::models::load_weights(*model, tensors, "t5 with tied copies"));

  // A pretrained encoder without a classification head loads; the head keeps its fresh initialisation.
  auto bert = peft4j::io::read_safetensors(kGolden + "/models/bert/model.safetensors");
  bert.erase("classifier.weight");
  bert.erase("classifier.bias");
  bert["cls.predictions.bias"] = at::zeros({256});
  auto model_bert = peft4j::models::create_model(golden_model("bert")->config());
  EXPECT_NO_THROW(peft4j::models::load_weights(*model_bert, bert, "bert without head"));
  EXPECT_GT(model_bert->named_parameters()["classifier.weight"].abs().sum().item<double>(), 0.0);
}

}  // namespace
