// Super-Tuning beyond the parity run: the support is the top (or bottom) k of |W|, the forward recomputed from the
// weights with plain tensor ops (Super and Supra modes), PEFT's keys with and without saved indices, merge and
// unmerge, identity init, refusals.
#include "linear_target_testing.h"
#include "peft4j/tuners/supertuning.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json supertuning(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "SUPERTUNING"}, {"sparsity", 0.9}, {"target_modules", {"q_proj", "v_proj"}},
                           {"init_weights", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Supertuning, SavesPeftsKeysShapesAndConfig) {
  // PEFT 0.21 for SupertuningConfig(target_modules=["v_proj"], sparsity=0.9, r=2) on this llama (v_proj: 64 -> 32).
  auto model = peft("llama");
  model->add_adapter("default", supertuning({{"target_modules", {"v_proj"}}, {"r", 2}}));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.0.self_attn.v_proj.";
  EXPECT_EQ(state.size(), 8u);
  EXPECT_EQ(state.at(p + "supertuning_values").sizes(), (std::vector<int64_t>{204}));
  EXPECT_EQ(state.at(p + "supertuning_indices").sizes(), (std::vector<int64_t>{204}));
  EXPECT_EQ(state.at(p + "supertuning_indices").scalar_type(), at::kInt);
  EXPECT_EQ(state.at(p + "supertuning_lora_A.weight").sizes(), (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(state.at(p + "supertuning_lora_B.weight").sizes(), (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(model->trainable_parameter_count(), 792);
  EXPECT_EQ(model->adapter_config("default")["lora_alpha"], 4);  // PEFT fills 2·r and saves it

  auto lean = peft("llama");
  lean->add_adapter("default", supertuning({{"target_modules", {"v_proj"}}, {"save_precomputed_indices", false}}));
  auto lean_state = lean->adapter_state_dict("default");
  EXPECT_EQ(lean_state.size(), 2u);
  EXPECT_TRUE(lean_state.count(p + "supertuning_values"));
  EXPECT_EQ(lean->trainable_parameter_count(), 408);
}

TEST(Supertuning, SupportIsTheTopMagnitudesAndTheForwardComposesTheWeight) {
  auto model = peft("llama");
  model->add_adapter("default", supertuning({{"r", 4}, {"lora_alpha", 3.0}}));
  auto& layer = layer_at<peft4j::tuners::SupertuningLayer>(*model, "model.layers.1.self_attn.q_proj");
  at::Tensor w = layer.base_forward(at::eye(64)).t();  // the base weight, [out, in]
  auto top = at::topk(w.abs().flatten(), 409);
  EXPECT_TRUE(at::equal(layer.indices("default").to(at::kLong), std::get<1>(top)));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.1.self_attn.q_proj.";
  at::Tensor composed = w.flatten().clone();
  auto idx = layer.indices("default").to(at::kLong);
  composed.index_put_({idx}, composed.index({idx}) + state.at(p + "supertuning_values"));
  at::Tensor lora = 0.75 * at::mm(state.at(p + "supertuning_lora_B.weight"), state.at(p + "supertuning_lora_A.weight"));
  at::Tensor x = at::randn({3, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), at::linear(x, composed.reshape({64, 64}) + lora), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), composed.reshape({64, 64}) - w + lora, 1e-6, 1e-6));

  auto bottom = peft("llama");
  bottom->add_adapter("default", supertuning({{"select_top", false}}));
  auto& low = layer_at<peft4j::tuners::SupertuningLayer>(*bottom, "model.layers.1.self_attn.q_proj");
  EXPECT_TRUE(at::equal(low.indices("default").to(at::kLong),
                        std::get<1>(at::topk(w.abs().flatten(), 409, 0, /*largest=*/false))));
}

TEST(Supertuning, MergeRoundTripIdentityInitAndMixedBatchRefused) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", supertuning({{"init_weights", true}, {"r", 4}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("a", supertuning({{"r", 2}}));
  model->add_adapter("b", supertuning({{"sparsity", 0.5}}));
  model->set_active_adapters({"a", "b"});
  expect_merge_round_trip(*model, before, in, "supertuning");
  expect_mixed_batch_refused(*model, {"a", "__base__"}, in, "SUPERTUNING");
}

TEST(Supertuning, IndicesRecomputedWhenNotSaved) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  model->add_adapter("default", supertuning({{"save_precomputed_indices", false}, {"r", 2}}));
  at::Tensor adapted = logits(*model, in);
  std::string dir = temp_dir("supertuning_lean");
  model->save_adapter(dir, "default");
  auto fresh = peft("llama");
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), adapted));
  // PEFT refuses adapters that disagree on saving the indices
  expect_error([&] { fresh->add_adapter("saved", supertuning({})); }, ErrorKind::InvalidArgument,
               "'save_precomputed_indices'");
  EXPECT_EQ(fresh->adapter_names().size(), 1u);
}

TEST(Supertuning, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", supertuning(extra)); }; };
  expect_error(add({{"sparsity", 1.0}}), ErrorKind::InvalidArgument, "'sparsity'");
  expect_error(add({{"sparsity", 0.9999}}), ErrorKind::InvalidArgument, "'sparsity'");  // no entry of 2048 left
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"lora_alpha", 8}}), ErrorKind::InvalidArgument, "'lora_alpha'");
  expect_error(add({{"r", 2}, {"lora_dropout", 1.0}}), ErrorKind::InvalidArgument, "'lora_dropout'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // Conv1D is not a Super-Tuning target (PEFT takes nn.Linear only)
  expect_error([&] { gpt2->add_adapter("x", supertuning({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "c_attn");
}

}  // namespace
