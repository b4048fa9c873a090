// Arrow (arrow_config): create_arrow_model over saved task adapters; a router with one expert is that expert,
// GenKnowSub subtracting the expert itself leaves the base model, no merging, routers naming absent adapters refused.
#include "linear_target_testing.h"
#include "peft4j/tuners/lora_arrow.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

const nlohmann::json kExpert = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
                                {"target_modules", {"q_proj", "v_proj", "down_proj"}}};

TEST(LoraArrow, OneExpertTakesEveryTokenAndGenKnowSubOfItselfLeavesTheBase) {
  auto in = batch("lora_llama_all");
  auto expert = peft("llama");
  at::Tensor base = logits(*expert, in);
  expert->add_adapter("default", kExpert);
  at::Tensor expert_logits = logits(*expert, in);
  ASSERT_GT((expert_logits - base).abs().max().item<double>(), 1e-3);
  const std::string dir = temp_dir("arrow_task_0");
  expert->save_adapter(dir, "default");

  // top_k 1 over one expert: its softmax coefficient is 1 on every token, so the router's update is the expert's.
  auto model = peft("llama");
  peft4j::tuners::create_arrow_model(*model, {dir}, {{"top_k", 1}, {"rng_seed", 0}});
  EXPECT_EQ(model->active_adapters(), std::vector<std::string>{"arrow_router"});
  EXPECT_TRUE(at::allclose(logits(*model, in), expert_logits, 1e-4, 1e-5));
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "Arrow router");

  // GenKnowSub with the expert as the only general adapter: expert − mean(general) = 0, so the base model's logits.
  auto gks = peft("llama");
  peft4j::tuners::create_arrow_model(*gks, {dir}, {{"top_k", 1}, {"use_gks", true}, {"rng_seed", 0}}, {dir});
  EXPECT_TRUE(at::allclose(logits(*gks, in), base, 1e-4, 1e-5));
  expect_error([&] { peft4j::tuners::create_arrow_model(*peft("llama"), {dir}, {{"use_gks", true}}); },
               ErrorKind::InvalidArgument, "general LoRA paths");
}

TEST(LoraArrow, RouterNeedsItsExpertsAndRefusesBadFields) {
  auto model = peft("llama");
  model->add_adapter("task_0", kExpert);
  nlohmann::json router = kExpert;
  router["arrow_config"] = {{"task_adapter_names", {"task_0", "task_1"}}};
  expect_error([&] { model->add_adapter("arrow_router", router); }, ErrorKind::InvalidArgument, "'task_1'");
  router["arrow_config"] = {{"task_adapter_names", {"task_0"}}, {"top_k", 0}};
  expect_error([&] { model->add_adapter("arrow_router", router); }, ErrorKind::InvalidArgument, "'arrow_config.top_k'");
  router["arrow_config"] = {{"task_adapter_names", {"task_0"}}, {"use_gks", true}};
  expect_error([&] { model->add_adapter("arrow_router", router); }, ErrorKind::InvalidArgument,
               "'arrow_config.gks_adapter_names'");
  router["arrow_config"] = nlohmann::json::object();
  expect_error([&] { model->add_adapter("arrow_router", router); }, ErrorKind::InvalidArgument,
               "'arrow_config.task_adapter_names'");
}

}  // namespace
