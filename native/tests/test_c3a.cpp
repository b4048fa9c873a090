// C3A beyond the parity run: ΔW is the block-circulant convolution, several active adapters chain as PEFT's forward
// does, block sizes and patterns, init options, merge, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/c3a.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json c3a(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "C3A"}, {"block_size", 16}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(C3A, SavedAdapterEqualsPeftsFile) { expect_saved_equals_golden("c3a_llama", "llama"); }

TEST(C3A, DeltaWeightIsTheBlockCirculantConvolution) {
  auto model = peft("llama");
  model->load_adapter(case_dir("c3a_llama") + "/adapter", "default");
  auto& layer = layer_at<peft4j::tuners::C3ALayer>(*model, "model.layers.0.self_attn.v_proj");  // 64 -> 32
  at::Tensor x = at::randn({3, 64});
  at::NoGradGuard no_grad;
  at::Tensor convolved = layer.forward(x) - layer.base_forward(x);
  EXPECT_TRUE(at::allclose(convolved, at::linear(x, layer.delta_weight("default")), 1e-4, 1e-6));
}

TEST(C3A, SeveralActiveAdaptersChainAsPeftsForward) {
  // PEFT feeds the second adapter the first one's output: base(x) + h1 + conv2(h1), with h1 = conv1(x).
  auto model = peft("llama");
  model->add_adapter("a", c3a({{"target_modules", {"q_proj"}}, {"init_weights", "gaussian"}}));
  model->add_adapter("b", c3a({{"target_modules", {"q_proj"}}, {"init_weights", "gaussian"}, {"block_size", 32}}));
  model->set_active_adapters({"a", "b"});
  auto& layer = layer_at<peft4j::tuners::C3ALayer>(*model, "model.layers.0.self_attn.q_proj");
  at::Tensor x = at::randn({2, 64});
  at::NoGradGuard no_grad;
  at::Tensor h1 = at::linear(x, layer.delta_weight("a"));
  at::Tensor expected = layer.base_forward(x) + h1 + at::linear(h1, layer.delta_weight("b"));
  EXPECT_TRUE(at::allclose(layer.forward(x), expected, 1e-4, 1e-6));
}

TEST(C3A, BlockSizePatternAndInitOptions) {
  auto model = peft("llama");
  model->add_adapter("default", c3a({{"target_modules", {"q_proj", "down_proj"}}, {"block_size_pattern", {{"down_proj", 32}}}}));
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.at("base_model.model.model.layers.0.self_attn.q_proj.c3a_kernel").sizes(), (std::vector<int64_t>{4, 4, 16}));
  EXPECT_EQ(state.at("base_model.model.model.layers.0.mlp.down_proj.c3a_kernel").sizes(), (std::vector<int64_t>{2, 4, 32}));
  // xavier_uniform (the default) stays within √3 · √(2 / (in + out)); kaiming_uniform within √(1 / in)
  at::Tensor xavier = state.at("base_model.model.model.layers.0.self_attn.q_proj.c3a_kernel");
  EXPECT_LE(xavier.abs().max().item<double>(), std::sqrt(3.0) * std::sqrt(2.0 / 128));
  model->add_adapter("kaiming", c3a({{"init_weights", "kaiming_uniform"}}));
  at::Tensor kaiming = model->adapter_state_dict("kaiming").at("base_model.model.model.layers.1.self_attn.v_proj.c3a_kernel");
  EXPECT_LE(kaiming.abs().max().item<double>(), std::sqrt(1.0 / 64));
  EXPECT_GT(kaiming.abs().max().item<double>(), 0.0);
}

TEST(C3A, MergeEqualsUnmergedIdentityInitAndMixedBatchRefused) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", c3a({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", c3a({{"init_weights", "gaussian"}, {"target_modules", {"q_proj", "v_proj", "up_proj"}}}));
  expect_merge_round_trip(*model, before, in, "c3a");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "C3A");
}

TEST(C3A, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", c3a(extra)); }; };
  expect_error(add({{"block_size", 0}}), ErrorKind::InvalidArgument, "'block_size'");
  expect_error(add({{"block_size", 48}}), ErrorKind::InvalidArgument, "'block_size'");  // divides neither 64 nor 32
  expect_error(add({{"init_weights", "orthogonal"}}), ErrorKind::InvalidArgument, "'init_weights'");
  expect_error(add({{"bias", "c3a_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"block_size_pattern", {{"q_proj", "big"}}}}), ErrorKind::InvalidArgument, "'block_size_pattern'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // Conv1D is not a C3A target (PEFT takes nn.Linear only)
  expect_error([&] { gpt2->add_adapter("x", c3a({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
