// Prompt learning (prompt tuning, P-tuning, prefix tuning) and adaption prompt: config rejections, PEFT's save format
// round trip, generation with virtual tokens, trainable counts and the adaption prompt's zero-gate identity.
#include <torch/nn/modules/embedding.h>

#include "golden_testing.h"
#include "peft4j/models/generation.h"
#include "peft4j/tuners/prompt_tuning.h"

using namespace golden_testing;

namespace {

nlohmann::json golden_config(const std::string& case_name) {
  return peft4j::io::read_json_file(case_dir(case_name) + "/adapter/adapter_config.json");
}

// A training-mode config of the golden case's method (PEFT saves inference_mode true).
nlohmann::json training_config(const std::string& case_name) {
  nlohmann::json config = golden_config(case_name);
  config["inference_mode"] = false;
  return config;
}

// A model that takes no past keys/values: PEFT's prefix tuning cannot reach its attention.
class NoCacheModel : public peft4j::models::Model {
 public:
  NoCacheModel() { embedding_ = register_module("embed", torch::nn::Embedding(16, 8)); }
  peft4j::models::ModelOutput forward(const peft4j::models::ModelInputs& inputs) override {
    return {embedding_(inputs.input_ids), {}, {}, std::nullopt};
  }
  peft4j::models::Task task() const override { return peft4j::models::Task::CausalLM; }
  const nlohmann::json& config() const override { return config_; }
  std::string model_type() const override { return "no_cache"; }
  torch::nn::Module& input_embeddings() override { return *embedding_; }
  at::Tensor embed(const at::Tensor& ids) override { return embedding_(ids); }
  int64_t num_layers() const override { return 1; }
  int64_t num_kv_heads() const override { return 2; }
  int64_t head_dim() const override { return 4; }
  int64_t hidden_size() const override { return 8; }
  int64_t vocab_size() const override { return 16; }

 private:
  torch::nn::Embedding embedding_{nullptr};
  nlohmann::json config_ = {{"model_type", "no_cache"}, {"num_hidden_layers", 1}, {"hidden_size", 8},
                            {"num_attention_heads", 2}};
};

}  // namespace

TEST(PromptLearningConfig, RejectsConfigsThatCannotApply) {
  auto model = peft("llama");
  nlohmann::json zero = training_config("prompt_tuning_llama");
  zero["num_virtual_tokens"] = 0;
  expect_error([&] { model->add_adapter("p", zero); }, peft4j::ErrorKind::InvalidArgument, "num_virtual_tokens");

  nlohmann::json unused_hidden = training_config("prefix_llama");
  unused_hidden["encoder_hidden_size"] = 48;
  expect_error([&] { model->add_adapter("p", unused_hidden); }, peft4j::ErrorKind::InvalidArgument,
               "encoder_hidden_size");

  auto no_cache = std::make_shared<PeftModel>(std::make_shared<NoCacheModel>());
  nlohmann::json prefix = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 2}};
  expect_error([&] { no_cache->add_adapter("p", prefix); }, peft4j::ErrorKind::Unsupported, "no_cache");

  nlohmann::json adaption = training_config("adaption_prompt_llama");
  expect_error([&] { peft("gpt2")->add_adapter("a", adaption); }, peft4j::ErrorKind::Unsupported, "gpt2");
  // A rejected config leaves the model without adapters.
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_TRUE(at::equal(logits(*model, batch("prompt_tuning_llama")),
                        logits(model->base_model(), batch("prompt_tuning_llama"))));
}

TEST(PromptLearningSave, RoundTripGivesIdenticalLogits) {
  for (const std::string name : {"prefix_proj_llama", "ptuning_lstm_llama", "prompt_tuning_t5", "prefix_t5"}) {
    std::string arch = name.substr(name.rfind('_') + 1);
    at::manual_seed(3);
    auto model = peft(arch);
    model->add_adapter("default", training_config(name));
    const bool seq2seq = arch == "t5";  // decoder inputs come from the labels
    at::Tensor before = logits(*model, batch(name, seq2seq));
    std::string dir = temp_dir("prompt_save_" + name);
    model->save_adapter(dir, "default");
    // PEFT's file: the encoder's output table alone.
    auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
    ASSERT_EQ(saved.size(), 1u) << name;
    EXPECT_TRUE(saved.count("prompt_embeddings")) << name;
    auto fresh = peft(arch);
    fresh->load_adapter(dir, "default");
    EXPECT_TRUE(at::allclose(logits(*fresh, batch(name, seq2seq)), before, 1e-6, 1e-6)) << name;
  }
}

TEST(PromptLearningGenerate, VirtualTokensGiveGoldenGreedyIds) {
  for (const std::string name : {"prompt_tuning_llama", "prefix_gpt2", "ptuning_mlp_llama"}) {
    std::string arch = name.substr(name.rfind('_') + 1);
    auto model = peft(arch);
    model->load_adapter(case_dir(name) + "/adapter", "default");
    auto io = peft4j::io::read_safetensors(case_dir(name) + "/io.safetensors");
    const at::Tensor& want = io.at("greedy_ids");
    at::Tensor prompt = io.at("input_ids").slice(0, 0, 1);
    peft4j::models::GenerationConfig config;
    config.max_new_tokens = want.size(1) - prompt.size(1);
    for (bool cache : {true, false}) {
      config.use_cache = cache;
      at::Tensor got = peft4j::models::generate(*model, prompt, io.at("attention_mask").slice(0, 0, 1), config);
      EXPECT_TRUE(at::equal(got, want)) << name << " use_cache " << cache << ": " << got << " vs " << want;
    }
  }
}

TEST(PromptLearningCount, PrefixProjectionAddsTheMlp) {
  // llama: 2 layers, 2 key/value heads x 16 = token_dim 32, 5 virtual tokens.
  const int64_t v = 5, layers = 2, token_dim = 32, hidden = 32;
  auto plain = peft("llama");
  plain->add_adapter("default", training_config("prefix_llama"));
  EXPECT_EQ(plain->trainable_parameter_count(), v * layers * 2 * token_dim);
  auto projected = peft("llama");
  projected->add_adapter("default", training_config("prefix_proj_llama"));
  EXPECT_EQ(projected->trainable_parameter_count(),
            v * token_dim + (token_dim * hidden + hidden) + (hidden * layers * 2 * token_dim + layers * 2 * token_dim));
}

TEST(PromptLearningInit, TextInitTakesTheTokensRows) {
  auto model = peft("llama");
  nlohmann::json config = training_config("prompt_tuning_llama");
  config["prompt_tuning_init"] = "TEXT";
  config["prompt_tuning_init_text"] = "three tokens";
  config["tokenizer_name_or_path"] = "test";
  config["prompt_tuning_init_token_ids"] = {7, 11, 13};
  model->add_adapter("default", config);
  at::Tensor table = model->trainable_parameters().at(0).second;
  at::Tensor vocab = model->base_model().input_embeddings().named_parameters()["weight"];
  at::Tensor rows = vocab.index_select(0, at::tensor({7, 11, 13, 7, 11}, at::kLong));
  EXPECT_TRUE(at::equal(table, rows));
  EXPECT_EQ(peft4j::tuners::prompt_init_token_ids({1, 2}, 5), (std::vector<int64_t>{1, 2, 1, 2, 1}));
  EXPECT_EQ(peft4j::tuners::prompt_init_token_ids({1, 2, 3, 4}, 3), (std::vector<int64_t>{1, 2, 3}));
}

TEST(PromptLearningAdaption, ZeroGateLeavesBaseLogits) {
  auto model = peft("llama");
  at::Tensor base = logits(*model, batch("adaption_prompt_llama"));
  model->add_adapter("default", training_config("adaption_prompt_llama"));
  EXPECT_TRUE(at::equal(logits(*model, batch("adaption_prompt_llama")), base));
  // A nonzero gate changes them; deleting the adapter restores them.
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->trainable_parameters())
      if (name.find("adaption_gate") != std::string::npos) p.fill_(0.5);
  }
  EXPECT_FALSE(at::allclose(logits(*model, batch("adaption_prompt_llama")), base));
  model->delete_adapter("default");
  EXPECT_TRUE(at::equal(logits(*model, batch("adaption_prompt_llama")), base));
  EXPECT_TRUE(model->trainable_parameters().empty());
}

TEST(PromptLearningMerge, MergeAndMixedBatchAreRefused) {
  auto model = peft("llama");
  model->load_adapter(case_dir("prompt_tuning_llama") + "/adapter", "default");
  expect_error([&] { model->merge(); }, peft4j::ErrorKind::Unsupported, "PROMPT_TUNING");
  expect_error([&] { model->forward_mixed(batch("prompt_tuning_llama"), {"default", "__base__"}); },
               peft4j::ErrorKind::Unsupported, "mixed batch");
}
