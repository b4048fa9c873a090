// TinyLoRA beyond the parity run: the frozen SVD factors, the projections bit for bit PEFT's (torch.Generator seeded
// with projection_seed + the layer's position), weight_tying groups and their PEFT names, the update recomputed on
// Linear, Conv1D and Embedding, save_projection false, merge, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/tinylora.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::TinyLoraLayer;

nlohmann::json tinylora(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "TINYLORA"}, {"r", 2}, {"u", 8}, {"target_modules", {"q_proj", "v_proj"}},
                           {"init_weights", "uniform"}, {"init_v_bound", 0.3}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(TinyLora, ProjectionsArePeftsAndTheFactorsAreTheTruncatedSvd) {
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("default", tinylora({}));
  auto state = model->adapter_state_dict("default");
  // torch.normal(0, 1/√r, (u, r, r), generator=torch.Generator().manual_seed(42 + 0)) as torch 2.11 draws it
  at::Tensor p = state.at("base_model.model.model.layers.0.self_attn.q_proj.tinylora_P").flatten();
  const std::vector<float> want = {1.3625348806381226f, 1.051668643951416f, 0.6369032263755798f, -1.488828182220459f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(p[i].item<float>(), want[i]) << i;
  EXPECT_FLOAT_EQ(p[31].item<float>(), 0.608011782169342f);
  // B A is the best rank-2 approximation of W, A = √S Vᵀ and B = U √S
  const std::string v = "base_model.model.model.layers.1.self_attn.v_proj.";
  at::Tensor a = state.at(v + "tinylora_A"), b = state.at(v + "tinylora_B");
  at::Tensor w = before.at("model.layers.1.self_attn.v_proj.weight");
  auto [u, s, vh] = at::linalg_svd(w, false);
  at::Tensor best = at::matmul(u.slice(1, 0, 2) * s.slice(0, 0, 2), vh.slice(0, 0, 2));
  EXPECT_TRUE(at::allclose(at::matmul(b, a), best, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(a.pow(2).sum(1), s.slice(0, 0, 2), 1e-4, 1e-5));
}

TEST(TinyLora, WeightTyingGroupsTheTargetsAndNamesTheVectorsAsPeft) {
  // 5 targets at weight_tying 0.5: round(2.5) = 2 groups (ties to even), of 2 then 3 targets
  auto model = peft("llama");
  model->add_adapter("default", tinylora({{"weight_tying", 0.5}, {"target_modules", {"q_proj", "v_proj", "embed_tokens"}}}));
  auto names = model->trainable_parameters();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].first, "base_model.model.model.embed_tokens.tinylora_v.default.0");
  EXPECT_EQ(names[1].first, "base_model.model.model.embed_tokens.tinylora_v.default.1");
  EXPECT_EQ(model->trainable_parameter_count(), 16);
  expect_saved_keys(*model, "default",
                    {"model.embed_tokens", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"},
                    {"tinylora_A", "tinylora_B", "tinylora_P"},
                    {"base_model.tinylora_v.0", "base_model.tinylora_v.1",
                     "base_model.model.model.embed_tokens.base_layer.weight"});
  // positions 0, 1 (embed_tokens, layer 0 q_proj) use v.0; 2, 3, 4 use v.1: changing v.1 moves layer 0's v_proj only
  auto& q0 = layer_at<TinyLoraLayer>(*model, "model.layers.0.self_attn.q_proj");
  auto& v0 = layer_at<TinyLoraLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor dq = q0.delta_weight("default"), dv = v0.delta_weight("default");
  {
    at::NoGradGuard no_grad;
    names[1].second.add_(1.0);
  }
  EXPECT_TRUE(at::equal(q0.delta_weight("default"), dq));
  EXPECT_FALSE(at::allclose(v0.delta_weight("default"), dv));
}

TEST(TinyLora, TheUpdateIsBRAOnLinearConv1DAndEmbedding) {
  auto model = peft("gpt2");
  model->add_adapter("default", tinylora({{"target_modules", {"c_attn", "wte"}}, {"fan_in_fan_out", true}, {"r", 3}}));
  auto state = model->adapter_state_dict("default");
  // One v per target (weight_tying 0), in module order: wte's is group 0, h.1's c_attn's group 2.
  auto params = model->trainable_parameters();
  ASSERT_EQ(params.size(), 3u);
  auto core = [&](const std::string& prefix, int64_t group) {
    at::Tensor p = state.at(prefix + "tinylora_P");  // [u, r, r]
    return (params[group].second.detach().view({-1, 1, 1}) * p).sum(0);
  };
  at::NoGradGuard no_grad;
  const std::string c = "base_model.model.transformer.h.1.attn.c_attn.";
  at::Tensor delta = at::matmul(at::matmul(state.at(c + "tinylora_B"), core(c, 2)), state.at(c + "tinylora_A"));  // [192, 64]
  auto& layer = layer_at<TinyLoraLayer>(*model, "transformer.h.1.attn.c_attn");
  at::Tensor x = at::randn({2, 3, 64});
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, delta), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta.t(), 1e-5, 1e-6));
  const std::string e = "base_model.model.transformer.wte.";
  at::Tensor table = at::matmul(at::matmul(state.at(e + "tinylora_B"), core(e, 0)), state.at(e + "tinylora_A"));  // [256, 64]
  auto& wte = layer_at<TinyLoraLayer>(*model, "transformer.wte");
  at::Tensor ids = at::tensor({5, 0, 255}, at::kLong);
  EXPECT_TRUE(at::allclose(wte.forward(ids), wte.base_forward(ids) + table.index({ids}), 1e-5, 1e-6));
}

TEST(TinyLora, SaveProjectionFalseRegeneratesThemAndMustAgreeAcrossAdapters) {
  auto in = batch("lora_gpt2");
  auto model = peft("gpt2");
  model->add_adapter("default", tinylora({{"target_modules", {"c_attn", "c_fc"}}, {"save_projection", false},
                                          {"projection_seed", 7}}));
  std::string out = temp_dir("tinylora_noproj");
  model->save_adapter(out, "default");
  auto saved = peft4j::io::read_safetensors(out + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 4u * 2 + 4);  // A and B of 4 layers, v of 4 groups
  for (const auto& [key, t] : saved) EXPECT_EQ(key.find("tinylora_P"), std::string::npos) << key;
  auto fresh = peft("gpt2");
  fresh->load_adapter(out, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), logits(*model, in)));
  expect_error([&] { model->add_adapter("other", tinylora({{"target_modules", {"c_proj"}}})); },
               ErrorKind::InvalidArgument, "'save_projection'");
}

TEST(TinyLora, IdentityInitMergeEqualsUnmergedAndMixedBatchRefused) {
  auto in = batch("lora_llama_all");
  auto model = peft("llama");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", tinylora({{"init_weights", true}, {"target_modules", {"q_proj", "embed_tokens"}}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", tinylora({{"target_modules", {"q_proj", "down_proj", "embed_tokens"}}}));
  expect_merge_round_trip(*model, before, in, "tinylora");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "TINYLORA");
}

TEST(TinyLora, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", tinylora(extra)); }; };
  expect_error(add({{"u", 0}}), ErrorKind::InvalidArgument, "'u'");
  expect_error(add({{"r", -1}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"weight_tying", 1.5}}), ErrorKind::InvalidArgument, "'weight_tying'");
  expect_error(add({{"init_weights", "normal"}}), ErrorKind::InvalidArgument, "'init_weights'");
  expect_error(add({{"bias", "tinylora_only"}}), ErrorKind::Unsupported, "'bias'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
