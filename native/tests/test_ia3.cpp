// (IA)^3 beyond the golden parity cases: input vs output scaling, several active adapters, merging with a bias
// (GPT-2's Conv1D), PEFT's seeded initialisation, mixed batches and refused configs.
#include <gtest/gtest.h>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/ia3.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using peft4j::tuners::Ia3Layer;
using peft4j::tuners::PeftModel;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

peft4j::models::ModelInputs batch(const std::string& name) {
  auto io = peft4j::io::read_safetensors(kGolden + "/cases/" + name + "/io.safetensors");
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  return in;
}

at::Tensor logits(peft4j::models::Model& model, const std::string& name = "ia3_llama") {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(batch(name)).logits;
}

nlohmann::json config(nlohmann::json changes = nlohmann::json::object()) {
  nlohmann::json c = {{"peft_type", "IA3"},
                      {"target_modules", {"k_proj", "v_proj", "down_proj"}},
                      {"feedforward_modules", {"down_proj"}}};
  c.update(changes);
  return c;
}

void expect_error(const std::function<void()>& body, peft4j::ErrorKind kind, const std::string& text) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning '" << text << "'";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

std::shared_ptr<Ia3Layer> wrap(torch::nn::Linear linear, bool feedforward, std::shared_ptr<peft4j::tuners::AdapterState> state) {
  return std::make_shared<Ia3Layer>(linear.ptr(), state, feedforward);
}

TEST(Ia3, FeedforwardScalesTheInputOthersTheOutput) {
  torch::nn::Linear linear(6, 4);
  auto state = std::make_shared<peft4j::tuners::AdapterState>();
  state->active = {"a"};
  at::Tensor x = at::randn({2, 3, 6});
  at::NoGradGuard no_grad;
  auto out = wrap(linear, false, state);
  out->add("a", /*init_ia3_weights=*/false, true);
  EXPECT_EQ(out->vector("a").sizes(), (at::IntArrayRef{4, 1}));
  EXPECT_TRUE(at::allclose(out->forward(x), linear(x) * out->vector("a").flatten(), 1e-6, 1e-7));
  auto in = wrap(linear, true, state);
  in->add("a", false, true);
  EXPECT_EQ(in->vector("a").sizes(), (at::IntArrayRef{1, 6}));
  EXPECT_TRUE(at::allclose(in->forward(x), linear(x * in->vector("a").flatten()), 1e-6, 1e-7));

  // Two active adapters multiply into one scaling.
  in->add("b", false, true);
  state->active = {"a", "b"};
  at::Tensor product = in->vector("a").flatten() * in->vector("b").flatten();
  EXPECT_TRUE(at::allclose(in->forward(x), linear(x * product), 1e-6, 1e-7));
  // Merging both folds both into the weight's columns; unmerging divides them out again.
  at::Tensor weight = linear->weight.detach().clone();
  at::Tensor expected = linear(x * product);
  in->merge({"a", "b"});
  EXPECT_TRUE(at::allclose(in->forward(x), expected, 1e-5, 1e-6));
  in->unmerge();
  EXPECT_TRUE(at::allclose(linear->weight, weight, 1e-5, 1e-6));
}

TEST(Ia3, SeededRandomInitIsPefts) {
  // torch.manual_seed(0); get_peft_model(llama, IA3Config(target_modules=["k_proj", "down_proj"],
  // feedforward_modules=["down_proj"], init_ia3_weights=False)) in PEFT 0.21; torch.rand(1) afterwards: 0.54176575.
  auto model = peft("llama");
  at::manual_seed(0);
  model->add_adapter("default", config({{"target_modules", {"k_proj", "down_proj"}}, {"init_ia3_weights", false}}));
  auto params = model->named_parameters(true);
  at::Tensor l = params["base_model.model.model.layers.1.mlp.down_proj.ia3_l.default"].detach().flatten();
  EXPECT_NEAR(l[0].item<double>(), -0.55963, 1e-5);
  EXPECT_NEAR(l[1].item<double>(), 0.533472, 1e-6);
  EXPECT_NEAR(l.sum().item<double>(), -0.86118, 1e-4);
  EXPECT_NEAR(at::rand({1}).item<double>(), 0.54176575, 1e-7);
}

TEST(Ia3, IdentityInitLeavesLogitsAndMergeKeepsThem) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  model->add_adapter("default", config());
  EXPECT_TRUE(at::equal(logits(*model), base));
  EXPECT_EQ(model->trainable_parameter_count(), 384);
}

TEST(Ia3, Gpt2MergeScalesConv1DWeightAndBiasAndUnmergeRestores) {
  auto model = peft("gpt2");
  std::map<std::string, at::Tensor> before;
  for (const auto& p : model->base_model().named_parameters()) before[p.key()] = p.value().detach().clone();
  model->load_adapter(kGolden + "/cases/ia3_gpt2/adapter", "default");
  at::Tensor adapted = logits(*model, "ia3_gpt2");
  model->merge();
  EXPECT_TRUE(at::allclose(logits(*model, "ia3_gpt2"), adapted, 1e-4, 1e-5));
  auto params = model->base_model().named_parameters();
  // Keys before wrapping have no ".base_layer".
  auto unwrapped = [](std::string key) { return key.erase(key.find(".base_layer"), 11); };
  at::Tensor l = params["transformer.h.0.attn.c_attn.ia3_l.default"].detach().flatten();
  // c_attn scales its outputs: the Conv1D weight's columns [in, out] and the bias.
  EXPECT_TRUE(at::allclose(params["transformer.h.0.attn.c_attn.base_layer.bias"],
                           before.at("transformer.h.0.attn.c_attn.bias") * l, 1e-6, 1e-7));
  EXPECT_TRUE(at::allclose(params["transformer.h.0.attn.c_attn.base_layer.weight"],
                           before.at("transformer.h.0.attn.c_attn.weight") * l, 1e-6, 1e-7));
  // mlp.c_proj scales its inputs: the weight's rows, the bias untouched.
  at::Tensor f = params["transformer.h.0.mlp.c_proj.ia3_l.default"].detach().flatten();
  EXPECT_TRUE(at::equal(params["transformer.h.0.mlp.c_proj.base_layer.bias"],
                        before.at("transformer.h.0.mlp.c_proj.bias")));
  EXPECT_TRUE(at::allclose(params["transformer.h.0.mlp.c_proj.base_layer.weight"],
                           before.at("transformer.h.0.mlp.c_proj.weight") * f.unsqueeze(1), 1e-6, 1e-7));
  model->unmerge();
  for (const auto& p : model->base_model().named_parameters())
    if (p.key().find(".base_layer") != std::string::npos)
      EXPECT_TRUE(at::allclose(p.value(), before.at(unwrapped(p.key())), 1e-5, 1e-6)) << p.key();
}

TEST(Ia3, MixedBatchRowsMatchTheirAdapterAlone) {
  auto model = peft("llama");
  at::Tensor base = logits(*model);
  at::manual_seed(2);
  model->add_adapter("a", config({{"init_ia3_weights", false}}));
  model->add_adapter("b", config({{"init_ia3_weights", false}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model);
  at::NoGradGuard no_grad;
  auto mixed = model->forward_mixed(batch("ia3_llama"), {"__base__", "a"}).logits;
  EXPECT_TRUE(at::allclose(mixed[0], base[0], 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(mixed[1], a[1], 1e-5, 1e-6));
}

TEST(Ia3, BadConfigsAreRefusedByField) {
  auto model = peft("llama");
  using peft4j::ErrorKind;
  expect_error([&] { model->add_adapter("x", config({{"feedforward_modules", {"gate_proj"}}})); },
               ErrorKind::InvalidArgument, "'feedforward_modules'");
  expect_error([&] { model->add_adapter("x", config({{"feedforward_modules", nullptr}})); },
               ErrorKind::InvalidArgument, "'feedforward_modules'");
  expect_error([&] { model->add_adapter("x", config({{"feedforward_modules", "(down"}})); },
               ErrorKind::InvalidArgument, "'feedforward_modules'");
  expect_error([&] { model->add_adapter("x", config({{"init_ia3_weights", 1}})); }, ErrorKind::InvalidArgument,
               "'init_ia3_weights'");
  expect_error([&] { model->add_adapter("x", config({{"target_modules", {"post_attention_layernorm"}},
                                                     {"feedforward_modules", nlohmann::json::array()}})); },
               ErrorKind::Unsupported, "post_attention_layernorm");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(Ia3, RegexFeedforwardModulesMatchTheWholeKey) {
  auto model = peft("t5");
  model->add_adapter("default", {{"peft_type", "IA3"},
                                 {"target_modules", ".*\\.(k|v|wo)$"},
                                 {"feedforward_modules", ".*DenseReluDense\\.wo"}});
  auto params = model->named_parameters(true);
  EXPECT_EQ(params["base_model.model.encoder.block.0.layer.1.DenseReluDense.wo.ia3_l.default"].sizes(),
            (at::IntArrayRef{1, 128}));
  EXPECT_EQ(params["base_model.model.encoder.block.0.layer.0.SelfAttention.k.ia3_l.default"].sizes(),
            (at::IntArrayRef{64, 1}));
}

}  // namespace
