// GraLoRA beyond the parity run: PEFT's saved keys and block layout, ΔW rebuilt block by block from the saved tensors
// (with the hybrid LoRA, on Linear and Conv1D), merge, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/gralora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::GraloraLayer;

nlohmann::json gralora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "GRALORA"}, {"r", 8}, {"gralora_k", 2}, {"alpha", 16},
                           {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

// ΔW [out, in] from the stacked blocks A [k, in/k, r] and B [k, r, out/k]: block (output j, input n) is
// (A_n[:, j·s:(j+1)·s] · B_j[n·s:(n+1)·s, :])ᵀ with s = r / k.
at::Tensor blockwise(const at::Tensor& a, const at::Tensor& b) {
  const int64_t k = a.size(0), in_block = a.size(1), r = a.size(2), out_block = b.size(2), s = r / k;
  at::Tensor delta = at::zeros({out_block * k, in_block * k});
  for (int64_t n = 0; n < k; ++n)
    for (int64_t j = 0; j < k; ++j)
      delta.slice(0, j * out_block, (j + 1) * out_block)
          .slice(1, n * in_block, (n + 1) * in_block)
          .copy_(at::matmul(a[n].slice(1, j * s, (j + 1) * s), b[j].slice(0, n * s, (n + 1) * s)).t());
  return delta;
}

TEST(Gralora, SavedKeysArePeftsAndTheUpdateIsRebuiltBlockByBlock) {
  auto model = peft("llama");
  model->add_adapter("default", gralora({{"init_weights", false}}));
  expect_saved_keys(*model, "default",
                    {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"},
                    {"gralora_A", "gralora_B"});
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.model.layers.0.self_attn.v_proj.";
  at::Tensor a = state.at(p + "gralora_A"), b = state.at(p + "gralora_B");
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 32, 8}));
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{2, 8, 16}));
  at::Tensor delta = blockwise(a, b) * (16.0 / 8);
  auto& layer = layer_at<GraloraLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta, 1e-5, 1e-6));
}

TEST(Gralora, HybridLoraOnConv1DAddsItsOwnRankToTheScaling) {
  auto model = peft("gpt2");
  model->add_adapter("default", gralora({{"target_modules", {"c_attn"}}, {"gralora_k", 4}, {"hybrid_r", 2},
                                         {"fan_in_fan_out", true}, {"init_weights", false}}));
  expect_saved_keys(*model, "default", {"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"},
                    {"gralora_A", "gralora_B", "gralora_A_general.weight", "gralora_B_general.weight"});
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.transformer.h.1.attn.c_attn.";
  at::Tensor delta = (blockwise(state.at(p + "gralora_A"), state.at(p + "gralora_B")) +
                      at::matmul(state.at(p + "gralora_B_general.weight"), state.at(p + "gralora_A_general.weight"))) *
                     (16.0 / (8 + 2));  // [192, 64]
  auto& layer = layer_at<GraloraLayer>(*model, "transformer.h.1.attn.c_attn");
  at::Tensor x = at::randn({2, 5, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta.t(), 1e-5, 1e-6));  // Conv1D layout [in, out]
}

TEST(Gralora, IdentityInitMergeEqualsUnmergedAndMixedBatchRefused) {
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "c_proj", "c_fc"}}}) {
    auto in = batch(arch == "llama" ? "lora_llama_all" : "lora_gpt2");
    auto model = peft(arch);
    auto before = base_weights(*model);
    at::Tensor base = logits(*model, in);
    model->add_adapter("zero", gralora({{"target_modules", targets}, {"hybrid_r", 2}}));
    EXPECT_TRUE(at::equal(logits(*model, in), base)) << arch;
    model->delete_adapter("zero");
    model->add_adapter("default", gralora({{"target_modules", targets}, {"hybrid_r", 2}, {"init_weights", false}}));
    expect_merge_round_trip(*model, before, in, "gralora " + arch);
    expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "GRALORA");
  }
}

TEST(Gralora, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", gralora(extra)); }; };
  expect_error(add({{"r", 6}, {"gralora_k", 4}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"gralora_k", 0}}), ErrorKind::InvalidArgument, "'gralora_k'");
  expect_error(add({{"gralora_k", 3}, {"r", 9}}), ErrorKind::InvalidArgument, "'gralora_k'");  // 3 divides no 64
  expect_error(add({{"hybrid_r", -1}}), ErrorKind::InvalidArgument, "'hybrid_r'");
  expect_error(add({{"bias", "gralora_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"gralora_dropout", 1.0}}), ErrorKind::InvalidArgument, "'gralora_dropout'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
