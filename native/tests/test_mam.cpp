// MAM adapter (mam.h): prefix tuning plus a scaled parallel FFN adapter as one tuner, checked against its parts.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/models/generation.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"
#include "peft4j/tuners/mam.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using golden_testing::logits;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

// Tiny llama: hidden 32, 2 layers, 2 key/value heads of 8 (prefix token_dim 16), FFN 64.
const nlohmann::json kConfig = {{"peft_type", "MAM"},
                                {"prefix_tuning", {{"num_virtual_tokens", 4}, {"encoder_hidden_size", 24}}},
                                {"ffn_adapter", {{"reduction_factor", 2}}}};

std::shared_ptr<PeftModel> mam_model(const std::string& family, const nlohmann::json& config = kConfig) {
  auto model = std::make_shared<PeftModel>(tiny_model(family));
  model->add_adapter("default", config);
  return model;
}

peft4j::tuners::DeltaLayer& ffn_layer(PeftModel& model, int64_t layer) {
  auto module = peft4j::tuners::module_at(model.base_model(), "model.layers." + std::to_string(layer) + ".mlp");
  return dynamic_cast<peft4j::tuners::DeltaLayer&>(*module);
}

void perturb_ffn_adapters(PeftModel& model) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : model.trainable_parameters())
    if (name.find(".adapters.") != std::string::npos) p.add_(at::randn_like(p) * 0.3);
}

TEST(Mam, TrainableCountIsPrefixPlusParallelAdapter) {
  // Prefix with projection: embedding V·T, Linear(T, H), Linear(H, 2·L·T); parallel adapter per layer with d_m = d/2:
  // down d·d_m + d_m, up d_m·d + d.
  const int64_t v = 4, t = 16, h = 24, l = kLayers, d = kHidden, m = kHidden / 2;
  const int64_t prefix = v * t + (t * h + h) + (h * 2 * l * t + 2 * l * t);
  const int64_t adapter = l * (2 * d * m + m + d);
  auto model = mam_model("llama");
  EXPECT_EQ(model->trainable_parameter_count(), prefix + adapter);
  EXPECT_EQ(count_named(*model, "prompt_encoder"), prefix);
  EXPECT_EQ(count_named(*model, ".adapters."), adapter);

  // gpt2 (4 heads of 8: T = 32) with the defaults for the projection width (800) and without a projection.
  auto plain = mam_model("gpt2", {{"peft_type", "MAM"},
                                  {"prefix_tuning", {{"num_virtual_tokens", 3}, {"prefix_projection", false}}},
                                  {"ffn_adapter", {{"bottleneck_size", 8}}}});
  EXPECT_EQ(plain->trainable_parameter_count(), 3 * 2 * l * 32 + l * (2 * d * 8 + 8 + d));
  auto defaults = mam_model("gpt2", {{"peft_type", "MAM"}});
  const int64_t def_prefix = 30 * 32 + (32 * 800 + 800) + (800 * 2 * l * 32 + 2 * l * 32);
  EXPECT_EQ(defaults->trainable_parameter_count(), def_prefix + l * (2 * d * m + m + d));
}

// Prefix tuning is no identity, so: disabling gives the base logits, and at initialisation MAM equals prefix tuning
// alone with the same prefix encoder (the parallel adapter's up-projection is zero).
TEST(Mam, FfnPartIsIdentityAtInitAndDisablingGivesBase) {
  auto in = permutation_batch(4, 8, 11);
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", kConfig);
  at::Tensor mam = logits(*model, in);
  EXPECT_FALSE(at::allclose(mam, base, 1e-4, 1e-4));
  model->set_disabled(true);
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->set_disabled(false);

  auto prefix_only = std::make_shared<PeftModel>(tiny_model("llama"));
  prefix_only->add_adapter("default", peft4j::tuners::mam_prefix_config(model->adapter_config("default")));
  std::map<std::string, at::Tensor> mam_params;
  for (auto& [name, p] : model->trainable_parameters()) mam_params[name] = p;
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : prefix_only->trainable_parameters()) p.copy_(mam_params.at(name));
  }
  EXPECT_TRUE(at::allclose(logits(*prefix_only, in), mam, 1e-6, 1e-6));

  perturb_ffn_adapters(*model);
  EXPECT_FALSE(at::allclose(logits(*prefix_only, in), logits(*model, in), 1e-4, 1e-4));
}

// The FFN part: h' = mlp(x) + 4 · up(relu(down(x))), recomputed from the weights.
TEST(Mam, FfnAdapterOutputRecomputed) {
  auto model = mam_model("llama");
  perturb_ffn_adapters(*model);
  auto& layer = ffn_layer(*model, 1);
  auto params = layer.named_parameters(true);
  at::Tensor wd = params["adapters.default.adapter_down.weight"], bd = params["adapters.default.adapter_down.bias"];
  at::Tensor wu = params["adapters.default.adapter_up.weight"], bu = params["adapters.default.adapter_up.bias"];
  at::NoGradGuard no_grad;
  model->eval();
  at::Tensor x = at::randn({2, 5, kHidden});
  at::Tensor expected = layer.base_forward(x) + 4.0 * at::matmul(at::relu(at::matmul(x, wd.t()) + bd), wu.t()) + bu * 4.0;
  EXPECT_TRUE(at::allclose(layer.forward(x), expected, 1e-5, 1e-5));
}

TEST(Mam, LearnsTheTinyTask) {
  auto model = mam_model("llama");
  expect_learns(*model, "MAM llama");
}

TEST(Mam, SavesPeftLikeKeysAndLoads) {
  auto model = mam_model("gpt2", {{"peft_type", "MAM"},
                                  {"prefix_tuning", {{"num_virtual_tokens", 4}, {"encoder_hidden_size", 24}}},
                                  {"ffn_adapter", {{"reduction_factor", 4}, {"leave_out", {0}}}}});
  perturb_ffn_adapters(*model);
  auto in = permutation_batch(4, 8, 11);
  at::Tensor adapted = logits(*model, in);
  std::string dir = golden_testing::temp_dir("mam_save");
  model->save_adapter(dir, "default");

  auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  std::set<std::string> keys;
  for (const auto& [key, t] : saved) keys.insert(key);
  EXPECT_EQ(keys, (std::set<std::string>{"prompt_embeddings", "base_model.transformer.h.1.mlp.adapters.adapter_down.weight",
                                         "base_model.transformer.h.1.mlp.adapters.adapter_down.bias",
                                         "base_model.transformer.h.1.mlp.adapters.adapter_up.weight",
                                         "base_model.transformer.h.1.mlp.adapters.adapter_up.bias"}));
  EXPECT_EQ(saved.at("prompt_embeddings").sizes(), (std::vector<int64_t>{4, 2 * kLayers * kHidden}));
  auto config = peft4j::tuners::read_adapter_config(dir);
  EXPECT_EQ(config["peft_type"], "MAM");
  EXPECT_EQ(config["ffn_adapter"]["scaling"], 4.0);
  EXPECT_EQ(config["ffn_adapter"]["target_modules"], nlohmann::json::array({"transformer.h.1.mlp"}));

  auto fresh = std::make_shared<PeftModel>(tiny_model("gpt2"));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::allclose(logits(*fresh, in), adapted, 1e-6, 1e-6));
  EXPECT_EQ(fresh->adapter_config("default")["peft_type"], "MAM");
}

// Generation with a KV cache (the prefixes enter once, then the cache carries them) gives the tokens that greedy
// argmax over full forwards gives.
TEST(Mam, GreedyGenerationWithCacheEqualsFullForwards) {
  auto model = mam_model("llama");
  perturb_ffn_adapters(*model);
  at::Tensor ids = permutation_batch(2, 5, 3).input_ids;
  peft4j::models::GenerationConfig config;
  config.max_new_tokens = 4;
  at::Tensor cached = peft4j::models::generate(*model, ids, at::Tensor(), config);
  for (int step = 0; step < 4; ++step) {
    peft4j::models::ModelInputs in;
    in.input_ids = ids;
    at::Tensor next = logits(*model, in).select(1, ids.size(1) - 1).argmax(-1, true);
    ids = at::cat({ids, next}, 1);
  }
  EXPECT_TRUE(at::equal(cached, ids)) << cached << ids;
}

TEST(Mam, RefusesMergeAndBadConfigs) {
  auto model = mam_model("llama");
  expect_error([&] { model->merge(); }, ErrorKind::Unsupported, "MAM");
  auto fresh = std::make_shared<PeftModel>(tiny_model("llama"));
  expect_error([&] { fresh->add_adapter("a", {{"peft_type", "MAM"}, {"ffn_adapter", {{"is_parallel", false}}}}); },
               ErrorKind::InvalidArgument, "ffn_adapter.is_parallel");
  expect_error([&] { fresh->add_adapter("a", {{"peft_type", "MAM"}, {"prefix_tuning", {{"num_virtual_tokens", 0}}}}); },
               ErrorKind::InvalidArgument, "prefix_tuning");
  expect_error([&] { fresh->add_adapter("a", {{"peft_type", "MAM"}, {"ffn_adapter", 3}}); },
               ErrorKind::InvalidArgument, "ffn_adapter");
  EXPECT_TRUE(fresh->adapter_names().empty());
}

}  // namespace
