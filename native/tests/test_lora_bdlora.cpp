// BD-LoRA (use_bdlora): the block-diagonal factor against the dense matrix it stands for, which factor follows the
// module name, merging, saved shapes, refused configurations.
#include "linear_target_testing.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_bdlora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::BlockDiagonalLinear;
using peft4j::tuners::LoraLayer;

nlohmann::json bdlora(nlohmann::json extra = nlohmann::json::object()) {
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
                           {"target_modules", {"q_proj", "v_proj", "o_proj", "down_proj"}},
                           {"use_bdlora", {{"target_modules_bd_a", {"q_proj", "v_proj"}},
                                           {"target_modules_bd_b", {"o_proj", "down_proj"}}, {"nblocks", 2}}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(LoraBdLora, BlockDiagonalLinearMultipliesEachBlockByItsOwnBlock) {
  BlockDiagonalLinear bd(8, 6, 2);  // blocks [3, 4]
  {
    at::NoGradGuard no_grad;
    bd.weight.copy_(at::randn({6, 4}));
  }
  at::Tensor m = bd.as_matrix();
  ASSERT_EQ(m.sizes(), at::IntArrayRef({6, 8}));
  EXPECT_TRUE(at::equal(m.slice(0, 0, 3).slice(1, 0, 4), bd.weight.slice(0, 0, 3)));
  EXPECT_TRUE(at::equal(m.slice(0, 3, 6).slice(1, 4, 8), bd.weight.slice(0, 3, 6)));
  EXPECT_EQ(m.slice(0, 0, 3).slice(1, 4, 8).abs().sum().item<double>(), 0.0);
  at::Tensor x = at::randn({2, 5, 8});
  EXPECT_TRUE(at::allclose(bd.forward(x), at::matmul(x, m.t()), 1e-5, 1e-6));
}

TEST(LoraBdLora, FactorFollowsTheModuleNameAndMergeEqualsUnmerged) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", bdlora());
  auto state = model->adapter_state_dict("default");
  const std::string l0 = "base_model.model.model.layers.0.";
  // q_proj (64 -> 64): A is block-diagonal [r, in / 2]; o_proj: B is [out, r / 2]; the other factor is plain
  EXPECT_EQ(state.at(l0 + "self_attn.q_proj.lora_A.weight").sizes(), at::IntArrayRef({4, 32}));
  EXPECT_EQ(state.at(l0 + "self_attn.q_proj.lora_B.weight").sizes(), at::IntArrayRef({64, 4}));
  EXPECT_EQ(state.at(l0 + "self_attn.o_proj.lora_A.weight").sizes(), at::IntArrayRef({4, 64}));
  EXPECT_EQ(state.at(l0 + "self_attn.o_proj.lora_B.weight").sizes(), at::IntArrayRef({64, 2}));
  // The block-diagonal B starts at zero, as PEFT's init_zero: only A-block-diagonal layers act at first.
  EXPECT_EQ(state.at(l0 + "self_attn.o_proj.lora_B.weight").abs().sum().item<double>(), 0.0);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->trainable_parameters()) p.normal_(0, 0.1);
  }
  auto& q = layer_at<LoraLayer>(*model, "model.layers.0.self_attn.q_proj");
  auto& a = dynamic_cast<BlockDiagonalLinear&>(q.lora_A_module("default"));
  at::Tensor dense_a = a.as_matrix();
  at::Tensor x = at::randn({3, 64});
  at::NoGradGuard no_grad;
  at::Tensor expected = q.base_forward(x) + at::linear(at::linear(x, dense_a), q.lora_b("default")) * 2.0;
  EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-4, 1e-6));
  EXPECT_TRUE(at::allclose(q.delta_weight("default"), at::matmul(q.lora_b("default"), dense_a) * 2.0, 1e-5, 1e-6));
  expect_merge_round_trip(*model, before, in, "bdlora");
}

TEST(LoraBdLora, RefusesBadConfigurationsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", bdlora(extra)); }; };
  expect_error(add({{"use_bdlora", {{"target_modules_bd_a", {"q_proj"}}, {"target_modules_bd_b", {"q_proj"}}}}}),
               ErrorKind::InvalidArgument, "use_bdlora");
  expect_error(add({{"use_bdlora", {{"nblocks", 0}}}}), ErrorKind::InvalidArgument, "use_bdlora.nblocks");
  expect_error(add({{"use_bdlora", {{"target_modules_bd_a", {"q_proj"}}, {"nblocks", 3}}},
                    {"target_modules", {"q_proj"}}}),
               ErrorKind::InvalidArgument, "nblocks");
  expect_error(add({{"use_bdlora", {{"target_modules_bd_a", {"q_proj"}}}}}), ErrorKind::InvalidArgument,
               "matches neither");
  expect_error(add({{"use_dora", true}}), ErrorKind::Unsupported, "several LoRA variants");
  EXPECT_TRUE(model->adapter_names().empty());
  // match_strict false: the unmatched modules get plain LoRA
  model->add_adapter("mixed", bdlora({{"use_bdlora", {{"target_modules_bd_a", {"q_proj"}}, {"match_strict", false}}}}));
  EXPECT_EQ(model->adapter_state_dict("mixed").at("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight").sizes(),
            at::IntArrayRef({4, 64}));
  auto gpt2 = peft("gpt2");
  expect_error([&] {
    gpt2->add_adapter("x", bdlora({{"target_modules", {"c_attn"}},
                                   {"use_bdlora", {{"target_modules_bd_a", {"c_attn"}}}}}));
  }, ErrorKind::Unsupported, "Conv1D");
}

}  // namespace
