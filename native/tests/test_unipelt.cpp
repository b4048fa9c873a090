// UniPELT (unipelt.h) and the gated bottleneck adapter: parameter counts from the formula, each gate recomputed from
// its weights with plain tensor ops, learning, generation without a KV cache, config errors.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/models/generation.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/prefix_tuning.h"
#include "peft4j/tuners/unipelt.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using golden_testing::logits;
using peft4j::ErrorKind;
using peft4j::tuners::module_at;
using peft4j::tuners::PeftModel;

// Tiny llama: hidden 32, 2 layers, 4 query heads and 2 key/value heads of 8 (prefix token_dim 16), FFN 64.
const nlohmann::json kConfig = {{"peft_type", "UNIPELT"},
                                {"prefix_tuning", {{"num_virtual_tokens", 4}, {"encoder_hidden_size", 24}}},
                                {"adapter", {{"reduction_factor", 4}}},
                                {"lora", {{"r", 4}}}};

std::shared_ptr<PeftModel> unipelt_model(const std::string& family, const nlohmann::json& config = kConfig) {
  auto model = std::make_shared<PeftModel>(tiny_model(family));
  model->add_adapter("default", config);
  return model;
}

void perturb(PeftModel& model, const std::string& part, double scale) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : model.trainable_parameters())
    if (name.find(part) != std::string::npos) p.add_(at::randn_like(p) * scale);
}

at::Tensor param(torch::nn::Module& module, const std::string& name) {
  auto params = module.named_parameters(true);
  const at::Tensor* p = params.find(name);
  if (!p) ADD_FAILURE() << "no parameter " << name;
  return p ? *p : at::Tensor();
}

// mean_t sigmoid(x·wᵀ + b), [B, outputs]: the gate, written out.
at::Tensor gate_of(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return (1.0 / (1.0 + at::exp(-(at::matmul(x, w.t()) + b)))).mean(1);
}

TEST(UniPelt, TrainableCountIsTheSumOfTheGatedParts) {
  const int64_t d = kHidden, l = kLayers, v = 4, t = 16, h = 24, r = 4, m = kHidden / 4;
  const int64_t prefix = v * t + (t * h + h) + (h * 2 * l * t + 2 * l * t);
  const int64_t prefix_gates = l * (d + 1);
  // q_proj 32 -> 32, v_proj 32 -> 16; each with a gate Linear(in, 1).
  const int64_t lora = l * ((r * (d + 32) + d + 1) + (r * (d + 16) + d + 1));
  // Pfeiffer adapter after the FFN with a gate Linear(d, 1).
  const int64_t adapter = l * (2 * d * m + m + d + d + 1);
  auto model = unipelt_model("llama");
  EXPECT_EQ(model->trainable_parameter_count(), prefix + prefix_gates + lora + adapter);
  EXPECT_EQ(count_named(*model, "prompt_encoder"), prefix + prefix_gates);
  EXPECT_EQ(count_named(*model, "lora_"), lora);
  EXPECT_EQ(count_named(*model, ".adapters."), adapter);

  // Separate key and value gates double the prefix gates; gpt2's default LoRA target is c_attn (32 -> 96).
  nlohmann::json config = kConfig;
  config["prefix_tuning"] = {{"num_virtual_tokens", 4}, {"prefix_projection", false}, {"shared_gating", false}};
  auto gpt2 = unipelt_model("gpt2", config);
  const int64_t gpt2_t = 32;  // 4 heads of 8
  EXPECT_EQ(gpt2->trainable_parameter_count(),
            v * 2 * l * gpt2_t + 2 * l * (d + 1) + l * (r * (d + 96) + d + 1) + adapter);
  EXPECT_EQ(gpt2->adapter_config("default")["lora"]["target_modules"], nlohmann::json({"c_attn"}));
}

TEST(UniPelt, LoraGateScalesTheUpdateInsteadOfAlphaOverR) {
  auto model = unipelt_model("llama");
  perturb(*model, "lora_", 0.3);
  auto layer = module_at(model->base_model(), "model.layers.0.self_attn.q_proj");
  at::Tensor w = param(*layer, "base_layer.weight"), a = param(*layer, "lora_A.default.weight"),
             b = param(*layer, "lora_B.default.weight"), gw = param(*layer, "lora_gate.default.weight"),
             gb = param(*layer, "lora_gate.default.bias");
  at::Tensor x = at::randn({2, 5, kHidden});
  at::Tensor gate = gate_of(x, gw, gb).view({2, 1, 1});
  at::Tensor expected = at::matmul(x, w.t()) + at::matmul(at::matmul(x, a.t()), b.t()) * gate;
  at::NoGradGuard no_grad;
  model->eval();
  at::Tensor actual = peft4j::models::forward_module(*layer, x);
  EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-5)) << (actual - expected).abs().max();
  // Each row is gated by its own mean: changing row 1 leaves row 0's output as it was.
  at::Tensor other = x.clone();
  other[1].mul_(3.0);
  EXPECT_TRUE(at::allclose(peft4j::models::forward_module(*layer, other)[0], actual[0], 1e-6, 1e-6));
}

TEST(UniPelt, AdapterGateScalesTheBottleneckOutput) {
  auto model = unipelt_model("llama");
  perturb(*model, ".adapters.", 0.3);
  auto layer = module_at(model->base_model(), "model.layers.1.mlp.down_proj");
  const std::string p = "adapters.default.";
  at::Tensor w = param(*layer, "base_layer.weight");
  at::Tensor x = at::randn({2, 5, 64});
  at::Tensor out = at::matmul(x, w.t());
  at::Tensor inner = at::relu(at::matmul(out, param(*layer, p + "adapter_down.weight").t()) +
                              param(*layer, p + "adapter_down.bias"));
  at::Tensor delta = at::matmul(inner, param(*layer, p + "adapter_up.weight").t()) + param(*layer, p + "adapter_up.bias");
  at::Tensor gate = gate_of(out, param(*layer, p + "gate.weight"), param(*layer, p + "gate.bias")).view({2, 1, 1});
  at::NoGradGuard no_grad;
  model->eval();
  at::Tensor actual = peft4j::models::forward_module(*layer, x);
  EXPECT_TRUE(at::allclose(actual, out + delta * gate, 1e-5, 1e-5)) << (actual - out - delta * gate).abs().max();
}

TEST(UniPelt, PrefixGatesScaleEachLayersPrefixByItsAttentionInput) {
  // One layer, so that the attention input is the normed embedding; LoRA (B = 0) and the adapter (up = 0) start as
  // the identity, so the adapted model is the base model fed the gated prefixes.
  nlohmann::json base_config = {{"model_type", "llama"}, {"vocab_size", kVocab}, {"hidden_size", kHidden},
                                {"intermediate_size", 64}, {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                                {"num_key_value_heads", 2}, {"max_position_embeddings", 64}};
  auto base = peft4j::models::create_model(base_config);
  at::manual_seed(3);
  {
    at::NoGradGuard no_grad;
    for (auto& p : base->parameters()) p.normal_(0.0, 0.3);
  }
  auto model = std::make_shared<PeftModel>(base);
  nlohmann::json config = kConfig;
  config["prefix_tuning"]["shared_gating"] = false;
  model->add_adapter("default", config);
  perturb(*model, "prefix_gates", 0.5);
  auto in = permutation_batch(2, 6, 5);
  at::Tensor actual = logits(*model, in);

  auto state = model->adapter_state_dict("default");
  at::Tensor gw = state.at("prefix_gates.weight")[0], gb = state.at("prefix_gates.bias")[0];  // [2, d], [2]
  at::NoGradGuard no_grad;
  at::Tensor normed = peft4j::models::forward_module(*module_at(*base, "model.layers.0.input_layernorm"),
                                                     base->embed(in.input_ids));
  at::Tensor gate = gate_of(normed, gw, gb);  // [B, 2]: keys, values
  nlohmann::json resolved = peft4j::tuners::unipelt_prefix_config(model->adapter_config("default"));
  auto kv = peft4j::tuners::prefix_layers(state.at("prompt_embeddings"), resolved, 2, 1, false)[0];
  peft4j::models::ModelInputs prefixed;
  prefixed.input_ids = in.input_ids;
  prefixed.attention_mask = at::ones({2, 4 + 6}, at::kLong);
  prefixed.past_key_values = peft4j::models::PastKeyValues{
      {{kv.key * gate.select(1, 0).view({-1, 1, 1, 1}), kv.value * gate.select(1, 1).view({-1, 1, 1, 1})}}, {}, {}};
  model->set_disabled(true);
  model->eval();
  at::Tensor expected = model->forward(prefixed).logits;
  EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-5)) << (actual - expected).abs().max();
  // Ungated prefixes give other logits: the gates act.
  prefixed.past_key_values = peft4j::models::PastKeyValues{{kv}, {}, {}};
  EXPECT_FALSE(at::allclose(model->forward(prefixed).logits, actual, 1e-3, 1e-3));
}

TEST(UniPelt, Learns) {
  auto model = unipelt_model("llama");
  expect_learns(*model, "UNIPELT on llama");
  auto gpt2 = unipelt_model("gpt2");
  expect_learns(*gpt2, "UNIPELT on gpt2");
}

TEST(UniPelt, GenerationRecomputesInsteadOfCaching) {
  auto model = unipelt_model("llama");
  perturb(*model, "", 0.3);
  model->eval();
  auto in = permutation_batch(2, 4, 21);
  peft4j::models::ModelInputs cached = in;
  cached.labels = at::Tensor();
  cached.use_cache = true;
  expect_error([&] { model->forward(cached); }, ErrorKind::InvalidArgument, "use_cache");

  peft4j::models::GenerationConfig gen;
  gen.max_new_tokens = 4;
  at::Tensor generated = peft4j::models::generate(*model, in.input_ids, at::Tensor(), gen);
  // Greedy decoding by full forwards: each step's gates average over exactly the text so far.
  at::Tensor sequence = in.input_ids;
  for (int step = 0; step < 4; ++step) {
    peft4j::models::ModelInputs full;
    full.input_ids = sequence;
    at::NoGradGuard no_grad;
    at::Tensor next = model->forward(full).logits.select(1, -1).argmax(-1, true);
    sequence = at::cat({sequence, next}, 1);
  }
  EXPECT_TRUE(at::equal(generated, sequence));
  // Disabled, the base model generates with its cache again.
  model->set_disabled(true);
  EXPECT_TRUE(model->supports_kv_cache());
}

TEST(UniPelt, SavesItsPartsNestedAndLoadsThemBack) {
  auto model = unipelt_model("llama");
  perturb(*model, "", 0.2);
  auto in = permutation_batch(2, 6, 8);
  at::Tensor trained = logits(*model, in);
  std::string dir = golden_testing::temp_dir("unipelt_save");
  model->save_adapter(dir, "default");
  auto saved = peft4j::tuners::read_adapter_config(dir);
  EXPECT_EQ(saved["peft_type"], "UNIPELT");
  EXPECT_FALSE(saved["lora"].contains("lora_alpha"));
  EXPECT_EQ(saved["adapter"]["use_gating"], true);
  EXPECT_EQ(saved["lora"]["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
  auto tensors = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  for (const char* key : {"prompt_embeddings", "prefix_gates.weight", "prefix_gates.bias",
                          "base_model.model.layers.0.self_attn.q_proj.lora_gate.weight",
                          "base_model.model.layers.1.mlp.down_proj.adapters.gate.bias"})
    EXPECT_TRUE(tensors.count(key)) << key;
  auto fresh = std::make_shared<PeftModel>(tiny_model("llama"));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), trained));
}

// BERT takes the prefixes in its encoder self-attention: one gate per layer, each acting, and the whole adapter
// round-trips through save/load. T5 has no bottleneck placement, so UniPELT is refused there by name.
TEST(UniPelt, BertGatesItsEncoderPrefixes) {
  auto model = golden_testing::peft("bert");
  auto in = golden_testing::batch("lora_bert_seqcls");
  model->add_adapter("default", {{"peft_type", "UNIPELT"}, {"prefix_tuning", {{"num_virtual_tokens", 3}}}});
  EXPECT_EQ(model->adapter_state_dict("default").at("prefix_gates.weight").size(0),
            model->base_model().config()["num_hidden_layers"].get<int64_t>());
  perturb(*model, "", 0.2);
  at::Tensor adapted = logits(*model, in);
  perturb(*model, "prefix_gates", 2.0);
  at::Tensor regated = logits(*model, in);
  EXPECT_FALSE(at::allclose(adapted, regated, 1e-4, 1e-4)) << "the prefix gates do not act";
  std::string dir = golden_testing::temp_dir("unipelt_bert");
  model->save_adapter(dir, "default");
  auto fresh = golden_testing::peft("bert");
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(logits(*fresh, in), regated));

  auto t5 = golden_testing::peft("t5");
  expect_error([&] { t5->add_adapter("default", {{"peft_type", "UNIPELT"}}); }, ErrorKind::Unsupported, "t5");
}

TEST(UniPelt, ConfigErrorsNameTheField) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto with = [](const char* part, const char* field, const nlohmann::json& value) {
    nlohmann::json c = kConfig;
    c[part][field] = value;
    return c;
  };
  expect_error([&] { model->add_adapter("a", with("lora", "lora_alpha", 16)); }, ErrorKind::InvalidArgument,
               "lora.lora_alpha");
  expect_error([&] { model->add_adapter("a", with("adapter", "use_gating", false)); }, ErrorKind::InvalidArgument,
               "adapter.use_gating");
  expect_error([&] { model->add_adapter("a", with("prefix_tuning", "num_virtual_tokens", 0)); },
               ErrorKind::InvalidArgument, "prefix_tuning");
  expect_error([&] { model->add_adapter("a", with("lora", "target_modules", nlohmann::json({"down_proj"}))); },
               ErrorKind::InvalidArgument, "down_proj");
  expect_error([&] { model->add_adapter("a", with("lora", "target_modules", nlohmann::json({"nowhere"}))); },
               ErrorKind::InvalidArgument, "lora.target_modules");
  nlohmann::json not_object = kConfig;
  not_object["adapter"] = 3;
  expect_error([&] { model->add_adapter("a", not_object); }, ErrorKind::InvalidArgument, "'adapter'");
  // Nothing was left behind by the failed adds.
  EXPECT_TRUE(model->adapter_names().empty());
  EXPECT_EQ(model->trainable_parameter_count(), 0);
}

TEST(GatedBottleneck, GateCountsNoCacheAndStartsAsIdentity) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto in = permutation_batch(2, 6, 4);
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", {{"peft_type", "BOTTLENECK"}, {"reduction_factor", 4}, {"use_gating", true}});
  const int64_t d = kHidden, m = kHidden / 4;
  EXPECT_EQ(model->trainable_parameter_count(), kLayers * (2 * d * m + m + d + d + 1));
  EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-6, 1e-6));
  EXPECT_FALSE(model->supports_kv_cache());
  expect_error([&] {
    model->add_adapter("f", {{"peft_type", "BOTTLENECK"}, {"use_gating", true}, {"fusion", {"default", "other"}}});
  }, ErrorKind::InvalidArgument, "use_gating");
}

}  // namespace
