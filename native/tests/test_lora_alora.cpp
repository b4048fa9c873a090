// aLoRA (alora_invocation_tokens): offsets as PEFT computes them, the adapter acting only from the invocation on,
// the base model's KV cache serving the adapter, generation with and without a cache, mixed batches, no merging.
#include "linear_target_testing.h"
#include "peft4j/models/generation.h"
#include "peft4j/tuners/lora_alora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json alora(const std::vector<int64_t>& tokens) {
  return {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
          {"target_modules", {"q_proj", "v_proj", "down_proj"}}, {"alora_invocation_tokens", tokens}};
}

std::vector<int64_t> tokens_of(const at::Tensor& ids, int64_t row, int64_t start, int64_t end) {
  at::Tensor t = ids[row].slice(0, start, end).contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST(LoraALora, OffsetCountsFromTheLastOccurrence) {
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 7, 9, 5, 7, 3});
  EXPECT_EQ(peft4j::tuners::alora_offset(ids, {5, 7}), 3);  // the last "5 7" starts at index 3 of 6
  EXPECT_EQ(peft4j::tuners::alora_offset(ids, {3}), 1);
  EXPECT_EQ(peft4j::tuners::alora_offset(ids, {9, 5, 7}), 4);
  EXPECT_EQ(peft4j::tuners::alora_offset(ids, {9, 9}), 0);
  EXPECT_EQ(peft4j::tuners::alora_offset(ids, {5, 7, 3, 1}), 0);
}

TEST(LoraALora, ActsOnlyFromTheInvocationOnAndNotOnRowsWithoutIt) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", alora(tokens_of(in.input_ids, 0, 4, 6)));
  at::Tensor adapted = logits(*model, in);
  // Row 0: positions before the invocation are the base model's, from it on they differ.
  EXPECT_TRUE(at::allclose(adapted[0].slice(0, 0, 4), base[0].slice(0, 0, 4), 1e-5, 1e-6));
  EXPECT_GT((adapted[0].slice(0, 4) - base[0].slice(0, 4)).abs().max().item<double>(), 1e-3);
  // Row 1 lacks the tokens (checked), so it is the base model's throughout.
  ASSERT_EQ(peft4j::tuners::alora_offset(in.input_ids[1], tokens_of(in.input_ids, 0, 4, 6)), 0);
  EXPECT_TRUE(at::allclose(adapted[1], base[1], 1e-5, 1e-6));
  // Without input_ids the adapter cannot find its tokens and stays off (PEFT's warning).
  peft4j::models::ModelInputs embeds;
  embeds.inputs_embeds = model->embed(in.input_ids);
  embeds.attention_mask = in.attention_mask;
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(model->forward(embeds).logits, base, 1e-5, 1e-6));
}

TEST(LoraALora, BaseModelCacheOfTheContextServesTheAdapter) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  model->add_adapter("default", alora(tokens_of(in.input_ids, 0, 5, 7)));
  at::Tensor ids = in.input_ids.slice(0, 0, 1);
  at::Tensor full = logits(*model, {ids});
  at::NoGradGuard no_grad;
  // The context before the invocation runs on the base model; its cache then feeds the adapter.
  peft4j::models::ModelInputs context;
  context.input_ids = ids.slice(1, 0, 5);
  context.use_cache = true;
  model->set_disabled(true);
  auto cached = model->forward(context);
  model->set_disabled(false);
  peft4j::models::ModelInputs rest;
  rest.input_ids = ids.slice(1, 5);
  rest.past_key_values = cached.past_key_values;
  at::Tensor continued = model->forward(rest).logits;
  EXPECT_TRUE(at::allclose(continued, full.slice(1, 5), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(cached.logits, full.slice(1, 0, 5), 1e-4, 1e-5));
}

TEST(LoraALora, GenerationWithACacheEqualsRecomputationAndMixedBatchesRoute) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  model->add_adapter("default", alora(tokens_of(in.input_ids, 0, 3, 5)));
  peft4j::models::GenerationConfig config;
  config.max_new_tokens = 6;
  at::Tensor prompt = in.input_ids.slice(0, 0, 1);
  at::Tensor cached = peft4j::models::generate(*model, prompt, at::Tensor(), config);
  config.use_cache = false;
  EXPECT_TRUE(at::equal(peft4j::models::generate(*model, prompt, at::Tensor(), config), cached));
  // A mixed batch routes rows: row 0 adapted from its invocation, row 1 the base model's.
  at::Tensor single = logits(*model, in);
  at::NoGradGuard no_grad;
  model->eval();
  at::Tensor mixed = model->forward_mixed(in, {"default", "__base__"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], single[0], 1e-5, 1e-6));
  model->set_disabled(true);
  at::Tensor base = logits(*model, in);
  model->set_disabled(false);
  EXPECT_TRUE(at::allclose(mixed[1], base[1], 1e-5, 1e-6));
}

TEST(LoraALora, RefusesMergingAndBadTokens) {
  auto model = peft("llama");
  model->add_adapter("default", alora({3, 4}));
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "aLoRA");
  nlohmann::json bad = alora({3});
  bad["alora_invocation_tokens"] = {"a"};
  expect_error([&] { model->add_adapter("bad", bad); }, ErrorKind::InvalidArgument, "'alora_invocation_tokens'");
  // An empty list asks for no aLoRA (PEFT's truthiness): a plain adapter, which merges.
  model->add_adapter("plain", alora({}));
  model->set_adapter("plain");
  model->merge();
  EXPECT_EQ(model->adapter_names().size(), 2u);
}

}  // namespace
