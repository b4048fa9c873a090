// HiRA beyond the parity run: PEFT's saved keys, the Hadamard update recomputed from the saved tensors on Linear,
// Conv1D and Embedding, merging several adapters against the weight before the first merge and unmerging back to
// it exactly, PEFT's init variants, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/hira.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::HiraLayer;

nlohmann::json hira(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "HIRA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(Hira, SavedKeysArePeftsAndTheUpdateModulatesTheBaseWeight) {
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", hira({{"target_modules", {"q_proj", "embed_tokens"}}, {"init_weights", false}}));
  expect_saved_keys(*model, "default", {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"},
                    {"hira_A", "hira_B"},
                    {"base_model.model.model.embed_tokens.hira_embedding_A",
                     "base_model.model.model.embed_tokens.hira_embedding_B",
                     "base_model.model.model.embed_tokens.base_layer.weight"});
  auto state = model->adapter_state_dict("default");
  at::NoGradGuard no_grad;
  // Linear: Δh = (W ⊙ B A) x
  const std::string q = "base_model.model.model.layers.1.self_attn.q_proj.";
  at::Tensor w = before.at("model.layers.1.self_attn.q_proj.weight");
  at::Tensor delta = w * at::matmul(state.at(q + "hira_B"), state.at(q + "hira_A"));
  auto& layer = layer_at<HiraLayer>(*model, "model.layers.1.self_attn.q_proj");
  at::Tensor x = at::randn({3, 64});
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
  // Embedding: the lookup of W ⊙ (B A)ᵀ, A [r, num_embeddings], B [dim, r]
  const std::string e = "base_model.model.model.embed_tokens.";
  at::Tensor table = before.at("model.embed_tokens.weight");
  at::Tensor modulated = table * at::matmul(state.at(e + "hira_embedding_B"), state.at(e + "hira_embedding_A")).t();
  auto& embedding = layer_at<HiraLayer>(*model, "model.embed_tokens");
  at::Tensor ids = at::tensor({3, 0, 255, 7}, at::kLong);
  EXPECT_TRUE(at::allclose(embedding.forward(ids), table.index({ids}) + modulated.index({ids}), 1e-5, 1e-6));
}

TEST(Hira, Conv1DTakesTheTransposedWeight) {
  auto model = peft("gpt2");
  auto before = base_weights(*model);
  model->add_adapter("default", hira({{"target_modules", {"c_fc"}}, {"fan_in_fan_out", true}, {"init_weights", false}}));
  auto state = model->adapter_state_dict("default");
  const std::string p = "base_model.model.transformer.h.0.mlp.c_fc.";
  at::Tensor w = before.at("transformer.h.0.mlp.c_fc.weight").t();  // Conv1D stores [in, out]
  at::Tensor delta = w * at::matmul(state.at(p + "hira_B"), state.at(p + "hira_A"));
  auto& layer = layer_at<HiraLayer>(*model, "transformer.h.0.mlp.c_fc");
  at::Tensor x = at::randn({2, 4, 64});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
}

TEST(Hira, RankPatternHoldsOnlyWhereTheModuleIsAlreadyAHiraLayer) {
  // PEFT 0.21's dispatch gives a module's first HiRA adapter r; only update_layer reads rank_pattern.
  auto model = peft("gpt2");
  auto config = hira({{"target_modules", {"c_attn", "c_fc"}}, {"fan_in_fan_out", true}, {"rank_pattern", {{"c_fc", 2}}}});
  model->add_adapter("first", config);
  model->add_adapter("second", config);
  const std::string p = "base_model.model.transformer.h.0.mlp.c_fc.hira_A";
  EXPECT_EQ(model->adapter_state_dict("first").at(p).sizes(), (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(model->adapter_state_dict("second").at(p).sizes(), (std::vector<int64_t>{2, 64}));
}

TEST(Hira, MergingSeveralAdaptersUsesTheWeightBeforeTheFirstAndUnmergingRestoresIt) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("one", hira({{"init_weights", false}}));
  model->add_adapter("two", hira({{"init_weights", false}, {"r", 2}}));
  model->set_active_adapters({"one", "two"});
  at::Tensor unmerged = logits(*model, in);
  auto& layer = layer_at<HiraLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor w0 = before.at("model.layers.0.self_attn.v_proj.weight");
  at::Tensor expected = w0 + w0 * layer.modulation("one") + w0 * layer.modulation("two");
  model->merge();
  EXPECT_TRUE(at::allclose(layer.base_layer()->named_parameters()["weight"], expected, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(logits(*model, in), unmerged, 1e-4, 1e-5));
  model->unmerge();
  EXPECT_TRUE(at::equal(layer.base_layer()->named_parameters()["weight"], w0));
  expect_merge_round_trip(*model, before, in, "hira");
  expect_mixed_batch_refused(*model, {"one", "__base__"}, in, "HIRA");
}

TEST(Hira, InitVariantsAsPeft) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  // true: kaiming-uniform A (within 1/√in), B = 0; on an embedding A = 0 and B ~ N(0, 1); both the identity
  model->add_adapter("default", hira({{"target_modules", {"q_proj", "embed_tokens"}}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  auto state = model->adapter_state_dict("default");
  EXPECT_LE(state.at("base_model.model.model.layers.0.self_attn.q_proj.hira_A").abs().max().item<double>(), 1.0 / 8);
  EXPECT_EQ(state.at("base_model.model.model.embed_tokens.hira_embedding_A").abs().max().item<double>(), 0.0);
  EXPECT_GT(state.at("base_model.model.model.embed_tokens.hira_embedding_B").std().item<double>(), 0.5);
  // "gaussian": A ~ N(0, 1/r), B = 0
  model->add_adapter("gaussian", hira({{"init_weights", "gaussian"}, {"r", 16}}));
  at::Tensor a = model->adapter_state_dict("gaussian").at("base_model.model.model.layers.0.self_attn.q_proj.hira_A");
  EXPECT_NEAR(a.std().item<double>(), 1.0 / 16, 0.01);
}

TEST(Hira, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", hira(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"init_weights", "orthogonal"}}), ErrorKind::InvalidArgument, "'init_weights'");
  expect_error(add({{"hira_dropout", -0.1}}), ErrorKind::InvalidArgument, "'hira_dropout'");
  expect_error(add({{"rank_pattern", {{"q_proj", 1.5}}}}), ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error(add({{"target_modules", {"input_layernorm"}}}), ErrorKind::Unsupported, "input_layernorm");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
