// DEFT beyond the parity run: the layer output recomputed from P and R with plain tensor ops (relu and qr), the
// identity init, PaRa, PEFT's saved keys, merge = unmerged on Linear and Conv1D with several adapters merged at once,
// several adapters, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/deft.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::DeftLayer;

nlohmann::json deft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "DEFT"}, {"r", 4}, {"target_modules", {"q_proj", "down_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

// W' x + b with W' = (I − P_proj) W + s Q_P R, from the saved tensors.
at::Tensor recomputed(const at::Tensor& W, const at::Tensor& b, const at::Tensor& P, const at::Tensor& R, bool qr,
                      double s, const at::Tensor& x) {
  at::Tensor Q = qr ? std::get<0>(at::linalg_qr(P)) : P;
  at::Tensor right = qr ? Q : at::relu(P);
  at::Tensor eye = at::eye(W.size(0));
  at::Tensor adapted = at::matmul(eye - at::matmul(Q, right.t()), W);
  if (R.defined()) adapted = adapted + s * at::matmul(Q, R);
  at::Tensor out = at::matmul(x, adapted.t());
  return b.defined() ? out + b : out;
}

TEST(Deft, LayerOutputIsTheAdaptedWeightsForRelUAndQr) {
  for (const std::string method : {"relu", "qr"}) {
    auto model = peft("llama");
    model->add_adapter("default", deft({{"init_weights", false}, {"decomposition_method", method}, {"alpha", 8}}));
    const std::string key = "model.layers.1.mlp.down_proj";
    auto& layer = layer_at<DeftLayer>(*model, key);
    auto t = model->adapter_state_dict("default");
    at::Tensor P = t.at("base_model.model." + key + ".deft_P"), R = t.at("base_model.model." + key + ".deft_R");
    at::Tensor W = peft4j::tuners::linear_weight(*layer.base_layer());
    at::manual_seed(3);
    at::Tensor x = at::randn({2, 3, 128});
    at::NoGradGuard no_grad;
    layer.eval();
    EXPECT_TRUE(at::allclose(layer.forward(x), recomputed(W, at::Tensor(), P, R, method == "qr", 8.0 / 4, x), 1e-4, 1e-5))
        << method;
  }
}

TEST(Deft, ParaRemovesTheSubspaceOnly) {
  auto model = peft("gpt2");
  model->add_adapter("default", deft({{"para", true}, {"target_modules", {"c_fc"}}}));
  const std::string key = "transformer.h.0.mlp.c_fc";
  auto& layer = layer_at<DeftLayer>(*model, key);
  auto t = model->adapter_state_dict("default");
  EXPECT_EQ(t.count("base_model.model." + key + ".deft_R"), 0u);  // PaRa has no R
  at::Tensor P = t.at("base_model.model." + key + ".deft_P");
  at::Tensor W = peft4j::tuners::linear_weight(*layer.base_layer()).t();  // Conv1D stores [in, out]
  at::Tensor b = peft4j::tuners::linear_bias(*layer.base_layer());
  at::manual_seed(4);
  at::Tensor x = at::randn({2, 3, 64});
  at::NoGradGuard no_grad;
  layer.eval();
  EXPECT_TRUE(at::allclose(layer.forward(x), recomputed(W, b, P, at::Tensor(), false, 1.0, x), 1e-4, 1e-5));
}

TEST(Deft, IdentityInitLeavesTheModelUnchanged) {
  auto in = batch("lora_gpt2");
  auto model = peft("gpt2");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", deft({{"target_modules", {"c_attn", "c_proj"}}, {"alpha", 16}}));
  EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-5, 1e-5));
  // P [out, r] and R [r, in] per layer: c_attn 64 -> 192, attn.c_proj and mlp.c_proj 64 -> 64 and 256 -> 64.
  EXPECT_EQ(model->trainable_parameter_count(), 2 * (192 * 4 + 4 * 64) + 2 * (64 * 4 + 4 * 64) + 2 * (64 * 4 + 4 * 256));
}

TEST(Deft, SavesPeftsKeysAndShapes) {
  // PEFT 0.21 saved these for DeftConfig(r=4, target_modules=["q_proj", "down_proj"]) on the golden llama.
  auto model = peft("llama");
  model->add_adapter("default", deft({}));
  auto saved = model->adapter_state_dict("default");
  std::map<std::string, std::vector<int64_t>> want;
  for (const std::string layer : {"0", "1"}) {
    std::string prefix = "base_model.model.model.layers." + layer + ".";
    want[prefix + "self_attn.q_proj.deft_P"] = {64, 4};
    want[prefix + "self_attn.q_proj.deft_R"] = {4, 64};
    want[prefix + "mlp.down_proj.deft_P"] = {64, 4};
    want[prefix + "mlp.down_proj.deft_R"] = {4, 128};
  }
  ASSERT_EQ(saved.size(), want.size());
  for (const auto& [key, shape] : want) {
    ASSERT_TRUE(saved.count(key)) << key;
    EXPECT_EQ(saved.at(key).sizes(), shape) << key;
  }
  EXPECT_EQ(model->trainable_parameter_count(), 2560);  // PEFT's count for this config
}

TEST(Deft, MergingTwoAdaptersAtOnceEqualsTheirForwardAndUnmergeRestores) {
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "c_proj"}}}) {
    auto in = batch(arch == "llama" ? "vera_llama" : "lora_gpt2");
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->add_adapter("a", deft({{"target_modules", targets}, {"init_weights", false}}));
    expect_merge_round_trip(*model, before, in, "deft " + arch);
    model->add_adapter("b", deft({{"target_modules", targets}, {"init_weights", false}, {"decomposition_method", "qr"}}));
    model->set_active_adapters({"a", "b"});
    expect_merge_round_trip(*model, before, in, "deft a+b " + arch);
  }
}

TEST(Deft, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", deft(extra)); }; };
  expect_error(add({{"r", 0}}), ErrorKind::InvalidArgument, "'r'");
  expect_error(add({{"decomposition_method", "svd"}}), ErrorKind::InvalidArgument, "'decomposition_method'");
  expect_error(add({{"bias", "deft_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"deft_dropout", 1.0}}), ErrorKind::InvalidArgument, "'deft_dropout'");
  expect_error(add({{"alpha", "big"}}), ErrorKind::InvalidArgument, "'alpha'");
  expect_error(add({{"target_modules", ".*q_proj"}, {"layers_to_transform", 0}}), ErrorKind::InvalidArgument,
               "'layers_to_transform'");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(Deft, TwoAdaptersSwitchAndDeleteIndependentlyAndMixedBatchesAreRefused) {
  auto in = batch("vera_llama");
  auto model = peft("llama");
  model->add_adapter("a", deft({{"init_weights", false}}));
  model->add_adapter("b", deft({{"init_weights", false}, {"r", 2}}));
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  EXPECT_FALSE(at::allclose(a, b));
  expect_mixed_batch_refused(*model, {"a", "b"}, in, "DEFT");
  model->delete_adapter("a");
  EXPECT_TRUE(at::equal(logits(*model, in), b));
}

}  // namespace
