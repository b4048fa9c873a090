// KaSA (kasa_config): the base weight keeps its k − r largest singular components, ΔW = s·B·diag(d)·A, the
// regulariser PEFT exposes, merging, and what PEFT refuses.
#include "linear_target_testing.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_kasa.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::LoraLayer;

nlohmann::json kasa(nlohmann::json extra = nlohmann::json::object()) {
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"init_lora_weights", false},
                           {"target_modules", {"q_proj", "v_proj"}}, {"kasa_config", {{"beta", 0.5}, {"gamma", 0.25}}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(LoraKasa, BaseWeightLosesItsSmallestSingularComponents) {
  auto model = peft("llama");
  at::Tensor original = model->base_model().named_parameters()["model.layers.0.self_attn.v_proj.weight"].clone();  // [32, 64]
  model->add_adapter("default", kasa());
  auto& v = layer_at<LoraLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor s_before = at::linalg_svdvals(original);
  at::Tensor s_after = at::linalg_svdvals(v.weight());
  EXPECT_TRUE(at::allclose(s_after.slice(0, 0, 28), s_before.slice(0, 0, 28), 1e-4, 1e-5));
  EXPECT_LT(s_after.slice(0, 28).abs().max().item<double>(), 1e-4);
  // The kept part is the projection of W onto its top right singular vectors.
  auto svd = at::linalg_svd(original, false);
  at::Tensor vh = std::get<2>(svd).slice(0, 0, 28);
  EXPECT_TRUE(at::allclose(v.weight(), at::matmul(at::matmul(original, vh.t()), vh), 1e-4, 1e-5));
  // Disabling the adapter gives the truncated base, not the original one (as in PEFT).
  at::Tensor x = at::randn({2, 64});
  model->set_disabled(true);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(v.forward(x), at::linear(x, v.weight()), 1e-5, 1e-6));
}

TEST(LoraKasa, UpdateCarriesTheLearnedDiagonalAndMerges) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  model->add_adapter("default", kasa());
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->trainable_parameters()) p.normal_(0, 0.1);
  }
  auto before = base_weights(*model);  // the truncated base weights, which unmerging restores
  auto state = model->adapter_state_dict("default");
  at::Tensor d = state.at("base_model.model.model.layers.1.self_attn.q_proj.lora_diag");
  EXPECT_EQ(d.sizes(), at::IntArrayRef({4}));
  auto& q = layer_at<LoraLayer>(*model, "model.layers.1.self_attn.q_proj");
  at::Tensor a = q.lora_a("default"), b = q.lora_b("default");
  at::Tensor x = at::randn({3, 64});
  at::NoGradGuard no_grad;
  at::Tensor expected = q.base_forward(x) + at::linear(at::linear(x, a) * d, b) * 2.0;
  EXPECT_TRUE(at::allclose(q.forward(x), expected, 1e-4, 1e-6));
  EXPECT_TRUE(at::allclose(q.delta_weight("default"), at::matmul(b * d, a) * 2.0, 1e-5, 1e-6));
  expect_merge_round_trip(*model, before, in, "kasa");
}

TEST(LoraKasa, RegulariserIsBetaL2PlusGammaOrthogonality) {
  auto model = peft("llama");
  model->add_adapter("default", kasa({{"target_modules", {"q_proj"}}}));
  double expected = 0;
  for (const char* path : {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}) {
    auto& q = layer_at<LoraLayer>(*model, path);
    at::Tensor d = q.variant_dict("lora_diag").parameter("default");
    at::Tensor a = q.lora_a("default"), b = q.lora_b("default");
    at::Tensor eye = at::eye(4);
    expected += 0.5 * d.pow(2).sum().item<double>() +
                0.25 * ((at::matmul(b.t(), b) - eye).pow(2).sum().sqrt() + (at::matmul(a, a.t()) - eye).pow(2).sum().sqrt())
                           .item<double>();
  }
  EXPECT_NEAR(peft4j::tuners::kasa_loss(*model).item<double>(), expected, 1e-4 * std::abs(expected));
  EXPECT_EQ(peft4j::tuners::kasa_loss(*model, {"other"}).item<double>(), 0.0);
}

TEST(LoraKasa, RefusesWhatPeftRefuses) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", kasa(extra)); }; };
  expect_error(add({{"kasa_config", {{"beta", -1}}}}), ErrorKind::InvalidArgument, "kasa_config.beta");
  expect_error(add({{"r", 32}, {"target_modules", {"v_proj"}}}), ErrorKind::InvalidArgument, "min(in_features");
  expect_error(add({{"target_modules", {"embed_tokens"}}}), ErrorKind::Unsupported, "kasa_config");
  expect_error(add({{"use_dora", true}}), ErrorKind::Unsupported, "several LoRA variants");
  model->add_adapter("plain", {{"peft_type", "LORA"}, {"target_modules", {"q_proj"}}});
  expect_error(add({}), ErrorKind::InvalidArgument, "KaSA cannot be combined");
  auto gpt2 = peft("gpt2");
  expect_error([&] { gpt2->add_adapter("x", kasa({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported,
               "fan_in_fan_out");
}

}  // namespace
