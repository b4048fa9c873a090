// Uni-LoRA beyond the parity run: NumPy's generator reproduced (raw PCG64 draws, both choice algorithms, PEFT's
// generate_index), the index and scale buffers, the update recomputed from θ_d, save_indices, merge, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/numpy_random.h"
#include "peft4j/tuners/unilora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::NumpyGenerator;
using peft4j::tuners::UniLoraLayer;

nlohmann::json unilora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "UNILORA"}, {"r", 2}, {"theta_d_length", 100}, {"init_theta_d_bound", 0.5},
                           {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

// The expected values below are NumPy 2.4's.
TEST(UniLora, NumpyGeneratorDrawsNumpysNumbers) {
  NumpyGenerator g42(42);  // np.random.default_rng(42).bit_generator.random_raw(3)
  EXPECT_EQ(g42.next_uint64(), 14276969152011380360ULL);
  EXPECT_EQ(g42.next_uint64(), 8095878257575067585ULL);
  EXPECT_EQ(g42.next_uint64(), 15838336090824644132ULL);
  NumpyGenerator big((1ULL << 40) + 5);  // a seed of two 32-bit words
  EXPECT_EQ(big.next_uint64(), 87427594128977387ULL);
  EXPECT_EQ(big.next_uint64(), 6872972437549564694ULL);
  // default_rng(9).choice(20000, size, replace=False): Floyd's algorithm (size 100), tail shuffle (size 1000)
  auto floyd = NumpyGenerator(9).choice_without_replacement(20000, 100);
  EXPECT_EQ(std::vector<int64_t>(floyd.begin(), floyd.begin() + 6),
            (std::vector<int64_t>{12794, 3785, 19138, 1791, 15630, 18227}));
  EXPECT_EQ(floyd.back(), 18615);
  auto tail = NumpyGenerator(9).choice_without_replacement(20000, 1000);
  EXPECT_EQ(std::vector<int64_t>(tail.begin(), tail.begin() + 6),
            (std::vector<int64_t>{9255, 2726, 12188, 17252, 19759, 16230}));
  EXPECT_EQ(tail.back(), 8430);
}

TEST(UniLora, IndicesArePeftsGenerateIndex) {
  // v_proj (64 -> 32) of both layers at rank 1: 2 · (64 + 32) = 192 indices, PEFT's generate_index(192, 7, 0), cut
  // in module order into each layer's A then B; each index is used 27 or 28 times, scales are 1/√uses.
  auto model = peft("llama");
  model->add_adapter("default", unilora({{"target_modules", {"v_proj"}}, {"theta_d_length", 7}, {"proj_seed", 0},
                                         {"r", 1}, {"save_indices", true}}));
  auto state = model->adapter_state_dict("default");
  const std::string l0 = "base_model.model.model.layers.0.self_attn.v_proj.";
  const std::string l1 = "base_model.model.model.layers.1.self_attn.v_proj.";
  at::Tensor a0 = state.at(l0 + "unilora_indices_A");
  EXPECT_EQ(a0.sizes(), (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(a0.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(a0.flatten().slice(0, 0, 12), at::tensor({6, 3, 2, 1, 3, 3, 6, 6, 3, 6, 4, 0}, at::kLong)));
  at::Tensor b1 = state.at(l1 + "unilora_indices_B");
  EXPECT_EQ(b1.sizes(), (std::vector<int64_t>{32, 1}));
  EXPECT_TRUE(at::equal(b1.flatten().slice(0, 26), at::tensor({2, 4, 2, 6, 1, 6}, at::kLong)));
  at::Tensor uses = at::tensor({27, 27, 27, 28, 28, 27, 28}, at::kFloat);
  EXPECT_TRUE(at::allclose(state.at(l0 + "unilora_scales_A").flatten(), uses.rsqrt().index({a0.flatten()})));
}

TEST(UniLora, TheUpdateIsPickedFromThetaAndSavedAsPefts) {
  auto model = peft("gpt2");
  model->add_adapter("default", unilora({{"target_modules", {"c_attn"}}, {"fan_in_fan_out", true}, {"save_indices", true}}));
  EXPECT_EQ(model->trainable_parameter_count(), 100);
  EXPECT_EQ(model->trainable_parameters()[0].first, "base_model.model.transformer.h.0.attn.c_attn.unilora_theta_d.default");
  expect_saved_keys(*model, "default", {"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"},
                    {"unilora_indices_A", "unilora_indices_B", "unilora_scales_A", "unilora_scales_B"},
                    {"base_model.unilora_theta_d"});
  auto state = model->adapter_state_dict("default");
  at::Tensor theta = state.at("base_model.unilora_theta_d");
  const std::string p = "base_model.model.transformer.h.1.attn.c_attn.";
  at::Tensor a = theta.index({state.at(p + "unilora_indices_A")}) * state.at(p + "unilora_scales_A");  // [2, 64]
  at::Tensor b = theta.index({state.at(p + "unilora_indices_B")}) * state.at(p + "unilora_scales_B");  // [192, 2]
  auto& layer = layer_at<UniLoraLayer>(*model, "transformer.h.1.attn.c_attn");
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(at::linear(x, a), b), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), at::matmul(b, a).t(), 1e-5, 1e-6));
}

TEST(UniLora, WithoutSaveIndicesOnlyThetaIsSavedAndTheIndicesComeBack) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", unilora({{"proj_seed", 11}, {"init_weights", false}}));
  std::string out = temp_dir("unilora");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved.begin()->first, "base_model.unilora_theta_d");
  auto fresh = peft("llama");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), logits(*model, in)));
  expect_merge_round_trip(*model, before, in, "unilora");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "UNILORA");
}

// PEFT's layers draw (and then overwrite) their index buffers from the global generator: a second adapter's θ_d
// comes after those draws. The expected values are PEFT 0.21's on the golden llama: torch.manual_seed(5),
// get_peft_model(first), add_adapter(second).
TEST(UniLora, ASecondAdaptersThetaIsDrawnAfterTheFirstsIndexDrawsAsPefts) {
  auto model = peft("llama");
  at::manual_seed(5);
  model->add_adapter("first", unilora({}));
  model->add_adapter("second", unilora({{"target_modules", {"v_proj", "o_proj"}}, {"proj_seed", 1}}));
  at::Tensor first = model->adapter_state_dict("first").at("base_model.unilora_theta_d");
  at::Tensor second = model->adapter_state_dict("second").at("base_model.unilora_theta_d");
  EXPECT_TRUE(at::allclose(first.slice(0, 0, 4), at::tensor({0.33025187f, -0.37388909f, 0.40746969f, 0.31992704f})));
  EXPECT_TRUE(at::allclose(second.slice(0, 0, 4), at::tensor({0.49781209f, 0.16722840f, -0.01363432f, 0.08852988f})));
}

TEST(UniLora, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", unilora(extra)); }; };
  expect_error(add({{"theta_d_length", 0}}), ErrorKind::InvalidArgument, "'theta_d_length'");
  expect_error(add({{"proj_seed", -1}}), ErrorKind::InvalidArgument, "'proj_seed'");
  expect_error(add({{"init_theta_d_bound", 0.0}}), ErrorKind::InvalidArgument, "'init_theta_d_bound'");
  expect_error(add({{"unilora_dropout", 2.0}}), ErrorKind::InvalidArgument, "'unilora_dropout'");
  expect_error(add({{"bias", "unilora_only"}}), ErrorKind::Unsupported, "'bias'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
