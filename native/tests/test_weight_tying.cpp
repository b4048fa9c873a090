// LoRA's trainable_token_indices and ensure_weight_tying on the golden qwen2 (tie_word_embeddings) and llama (untied):
// which modules get wrapped, what is shared, what is saved (PEFT's keys), and what unloading leaves; the live rows
// lora_*_trainable_tokens* and lora_*_tie_* check the numbers against PEFT.
#include <gtest/gtest.h>

#include "golden_testing.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/modules_to_save.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/tuners/trainable_token_indices.h"

namespace {

using golden_testing::expect_error;
using golden_testing::peft;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

nlohmann::json lora(const nlohmann::json& extra) {
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"q_proj"}},
                           {"init_lora_weights", false}};
  config.update(extra);
  return config;
}

std::shared_ptr<torch::nn::Module> at_path(PeftModel& model, const std::string& path) {
  return peft4j::tuners::module_at(model.base_model(), path);
}

at::Tensor logits(peft4j::models::Model& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  model.eval();
  peft4j::models::ModelInputs in;
  in.input_ids = ids;
  in.attention_mask = at::ones_like(ids);
  return model.forward(in).logits;
}

at::Tensor ids() { return at::tensor({1, 3, 5, 7, 9, 11}, at::kLong).view({1, -1}); }

TEST(TrainableTokenIndices, TiedLmHeadFollowsTheEmbeddingAndIsNotSaved) {
  auto model = peft("qwen2");
  at::Tensor base = logits(*model, ids());
  model->add_adapter("default", lora({{"trainable_token_indices", {3, 5}}}));
  auto* embed = dynamic_cast<peft4j::tuners::TrainableTokensWrapper*>(at_path(*model, "model.embed_tokens").get());
  auto* head = dynamic_cast<peft4j::tuners::TrainableTokensWrapper*>(at_path(*model, "lm_head").get());
  ASSERT_NE(embed, nullptr);
  ASSERT_NE(head, nullptr);
  // One tensor of rows for both; it starts as the base rows, so the model is unchanged by the tokens alone.
  EXPECT_TRUE(embed->token_adapter().delta("default").is_same(head->token_adapter().delta("default")));
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.count("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"), 1u);
  EXPECT_EQ(saved.count("base_model.model.lm_head.token_adapter.trainable_tokens_delta"), 0u);
  EXPECT_EQ(saved.count("base_model.model.model.embed_tokens.weight"), 0u);  // trainable tokens save little
  // Moving a row moves the input embedding and the logits of that token together.
  {
    at::NoGradGuard no_grad;
    embed->token_adapter().delta("default")[0].add_(1.0);
  }
  at::Tensor adapted = logits(*model, ids());
  at::Tensor merged = logits(*model->merge_and_unload(), ids());
  EXPECT_TRUE(at::allclose(adapted, merged, 1e-4, 1e-5));
  EXPECT_FALSE(at::allclose(adapted, base, 1e-4, 1e-5));
  // Unloading leaves HF's module tree: no wrapper, the embedding back under its own name.
  EXPECT_NE(dynamic_cast<torch::nn::EmbeddingImpl*>(at_path(*model, "model.embed_tokens").get()), nullptr);
  EXPECT_EQ(model->base_model().named_parameters().find("model.embed_tokens.token_adapter.base_layer.weight"), nullptr);
}

TEST(TrainableTokenIndices, DeleteAdapterRestoresTheModules) {
  auto model = peft("llama");
  model->add_adapter("default", lora({{"trainable_token_indices", {{"embed_tokens", {1, 2}}}}}));
  EXPECT_NE(dynamic_cast<peft4j::tuners::TrainableTokensWrapper*>(at_path(*model, "model.embed_tokens").get()), nullptr);
  // llama's lm_head is not tied: it stays as it is.
  EXPECT_NE(dynamic_cast<torch::nn::LinearImpl*>(at_path(*model, "lm_head").get()), nullptr);
  model->add_adapter("other", lora(nlohmann::json::object()));
  model->delete_adapter("default");
  EXPECT_NE(dynamic_cast<torch::nn::EmbeddingImpl*>(at_path(*model, "model.embed_tokens").get()), nullptr);
}

TEST(TrainableTokenIndices, BadValuesAndModulesAreRefusedByName) {
  auto model = peft("qwen2");
  expect_error([&] { model->add_adapter("a", lora({{"trainable_token_indices", {1, -2}}})); }, ErrorKind::InvalidArgument,
               "trainable_token_indices");
  expect_error([&] { model->add_adapter("a", lora({{"trainable_token_indices", {{"nope", {1}}}}})); },
               ErrorKind::InvalidArgument, "'nope'");
  expect_error([&] { model->add_adapter("a", lora({{"trainable_token_indices", {1, 300}}})); },
               ErrorKind::InvalidArgument, "outside the 256 rows");
  expect_error(
      [&] {
        model->add_adapter("a", lora({{"trainable_token_indices", {{"embed_tokens", {1}}}},
                                      {"modules_to_save", {"embed_tokens"}}}));
      },
      ErrorKind::InvalidArgument, "modules_to_save");
  // Tied modules with other indices: an error only when tying is asked for.
  nlohmann::json mismatched = {{"embed_tokens", {1, 2}}, {"lm_head", {1, 3}}};
  expect_error(
      [&] {
        model->add_adapter("a", lora({{"trainable_token_indices", mismatched}, {"ensure_weight_tying", true}}));
      },
      ErrorKind::InvalidArgument, "different token indices");
  // A failed add leaves the model as it was.
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_NE(dynamic_cast<torch::nn::EmbeddingImpl*>(at_path(*model, "model.embed_tokens").get()), nullptr);
  model->add_adapter("a", lora({{"trainable_token_indices", mismatched}}));
  auto* embed = dynamic_cast<peft4j::tuners::TrainableTokensWrapper*>(at_path(*model, "model.embed_tokens").get());
  auto* head = dynamic_cast<peft4j::tuners::TrainableTokensWrapper*>(at_path(*model, "lm_head").get());
  ASSERT_TRUE(embed && head);
  EXPECT_FALSE(embed->token_adapter().delta("a").is_same(head->token_adapter().delta("a")));
  EXPECT_EQ(model->adapter_state_dict("a").count("base_model.model.lm_head.token_adapter.trainable_tokens_delta"), 1u);
}

TEST(EnsureWeightTying, TiedLmHeadSharesTheEmbeddingsLoraTransposed) {
  auto model = peft("qwen2");
  at::Tensor base = logits(*model, ids());
  model->add_adapter("default", lora({{"target_modules", {"embed_tokens", "q_proj", "lm_head"}},
                                      {"ensure_weight_tying", true},
                                      {"init_lora_weights", true}}));
  // PEFT's saved config: the embedding by its path, lm_head left to the tie.
  EXPECT_EQ(model->adapter_config("default")["target_modules"],
            nlohmann::json({"embed_tokens", "q_proj", "model.embed_tokens"}));
  auto* embed = dynamic_cast<peft4j::tuners::LoraLayer*>(at_path(*model, "model.embed_tokens").get());
  auto* head = dynamic_cast<peft4j::tuners::LoraLayer*>(at_path(*model, "lm_head").get());
  ASSERT_TRUE(embed && head);
  at::Tensor a = head->lora_a("default"), b = head->lora_b("default");
  // Same storage, transposed, yet tensors of their own (each gets its gradient, as PEFT's two Parameters).
  EXPECT_EQ(a.data_ptr(), embed->lora_b("default").data_ptr());
  EXPECT_EQ(b.data_ptr(), embed->lora_a("default").data_ptr());
  EXPECT_FALSE(a.is_same(embed->lora_b("default")));
  EXPECT_TRUE(at::equal(a, embed->lora_b("default").t()));
  // The default init drawn for lm_head (B = 0) is the embedding's too, so the model starts unchanged.
  EXPECT_EQ(embed->lora_a("default").abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::allclose(logits(*model, ids()), base, 1e-5, 1e-6));
  {
    at::NoGradGuard no_grad;
    a.add_(0.5);
  }
  EXPECT_TRUE(at::equal(a, embed->lora_b("default").t()));
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.count("base_model.model.lm_head.lora_A.weight"), 1u);
  EXPECT_EQ(saved.count("base_model.model.model.embed_tokens.lora_embedding_B"), 1u);
}

TEST(EnsureWeightTying, ModulesToSaveCopyOfLmHeadIsTheEmbeddingCopy) {
  auto model = peft("qwen2");
  model->add_adapter("default", lora({{"modules_to_save", {"embed_tokens", "lm_head"}}, {"ensure_weight_tying", true}}));
  EXPECT_EQ(model->adapter_config("default")["modules_to_save"], nlohmann::json({"embed_tokens", "model.embed_tokens"}));
  auto* embed = dynamic_cast<peft4j::tuners::ModulesToSaveLayer*>(at_path(*model, "model.embed_tokens").get());
  auto* head = dynamic_cast<peft4j::tuners::ModulesToSaveLayer*>(at_path(*model, "lm_head").get());
  ASSERT_TRUE(embed && head);
  at::Tensor embed_copy = embed->copy("default")->named_parameters(false)["weight"];
  EXPECT_TRUE(head->copy("default")->named_parameters(false)["weight"].is_same(embed_copy));
  auto saved = model->adapter_state_dict("default");
  EXPECT_EQ(saved.count("base_model.model.model.embed_tokens.weight"), 1u);
  EXPECT_EQ(saved.count("base_model.model.lm_head.weight"), 1u);
  // Counted once: the copy of the embedding plus LoRA on q_proj's two layers.
  EXPECT_EQ(model->trainable_parameter_count(), embed_copy.numel() + 2 * 4 * (64 + 64));
}

TEST(EnsureWeightTying, UntiedModelTiesNothing) {
  auto model = peft("llama");
  model->add_adapter("default", lora({{"target_modules", {"embed_tokens", "q_proj"}}, {"ensure_weight_tying", true}}));
  EXPECT_EQ(model->adapter_config("default")["target_modules"], nlohmann::json({"embed_tokens", "q_proj"}));
  EXPECT_NE(dynamic_cast<torch::nn::LinearImpl*>(at_path(*model, "lm_head").get()), nullptr);
}

}  // namespace
