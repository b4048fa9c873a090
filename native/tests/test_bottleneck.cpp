// Bottleneck adapters (Houlsby, Pfeiffer, parallel, scaled parallel) and AdapterDrop: trainable counts against the
// literature's formulas, identity init, each placement's output recomputed from the adapter's weights with plain
// tensor ops, options that cannot apply refused, and learning a small task.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

nlohmann::json houlsby() {
  return {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"output_adapter", true}, {"reduction_factor", 16},
          {"non_linearity", "swish"}};
}
nlohmann::json pfeiffer() { return {{"peft_type", "BOTTLENECK"}, {"reduction_factor", 16}, {"non_linearity", "relu"}}; }
nlohmann::json parallel(const nlohmann::json& scaling) {
  return {{"peft_type", "BOTTLENECK"}, {"is_parallel", true}, {"reduction_factor", 2}, {"scaling", scaling}};
}

// The named parameters of the DeltaLayer at `path` for `adapter`.
std::map<std::string, at::Tensor> adapter_weights(PeftModel& model, const std::string& path, const std::string& adapter) {
  std::map<std::string, at::Tensor> out;
  auto layer = peft4j::tuners::module_at(model.base_model(), path);
  for (const auto& p : layer->named_parameters(true)) {
    const std::string prefix = "adapters." + adapter + ".";
    if (p.key().rfind(prefix, 0) == 0) out[p.key().substr(prefix.size())] = p.value().detach();
    if (p.key().rfind("base_layer.", 0) == 0) out[p.key()] = p.value().detach();
  }
  return out;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) { return at::matmul(x, w.t()) + b; }

TEST(Bottleneck, TrainableCountsMatchTheFormulas) {
  auto base = golden_testing::peft("llama");
  const int64_t L = base->num_layers(), d = base->hidden_size(), m = d / 16;
  const int64_t per_sublayer = 2 * d * m + m + d;  // down and up weights + their biases
  {
    auto model = golden_testing::peft("llama");
    model->add_adapter("a", houlsby());
    EXPECT_EQ(model->trainable_parameter_count(), L * 2 * per_sublayer);
  }
  {
    auto model = golden_testing::peft("llama");
    model->add_adapter("a", pfeiffer());
    EXPECT_EQ(model->trainable_parameter_count(), L * per_sublayer);
  }
  {  // AdapterDrop's fixed part: leave_out the lowest n = 1 layer
    auto model = golden_testing::peft("llama");
    auto config = houlsby();
    config["leave_out"] = {0};
    model->add_adapter("a", config);
    EXPECT_EQ(model->trainable_parameter_count(), (L - 1) * 2 * per_sublayer);
  }
  {  // parallel at the FFN: d_m = d / 2; scaled parallel adds the learned scalar
    const int64_t pm = d / 2, par = 2 * d * pm + pm + d;
    auto model = golden_testing::peft("llama");
    model->add_adapter("a", parallel(4.0));
    EXPECT_EQ(model->trainable_parameter_count(), L * par);
    auto scaled = golden_testing::peft("llama");
    scaled->add_adapter("a", parallel("learned"));
    EXPECT_EQ(scaled->trainable_parameter_count(), L * (par + 1));
  }
  {  // bottleneck_size sets d_m directly
    auto model = golden_testing::peft("gpt2");
    auto config = houlsby();
    config["bottleneck_size"] = 5;
    model->add_adapter("a", config);
    EXPECT_EQ(model->trainable_parameter_count(), model->num_layers() * 2 * (2 * model->hidden_size() * 5 + 5 + model->hidden_size()));
  }
}

TEST(Bottleneck, UntrainedAdaptersLeaveTheLogitsUnchanged) {
  std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"llama", houlsby()}, {"llama", pfeiffer()}, {"llama", parallel(4.0)}, {"llama", parallel("learned")},
      {"gpt2", houlsby()}, {"gpt2", parallel("channel")}, {"bert", houlsby()}};
  auto bert_ln = pfeiffer();
  bert_ln["original_ln_before"] = true;
  cases.push_back({"bert", bert_ln});
  for (const auto& [arch, config] : cases) {
    auto model = golden_testing::peft(arch);
    auto in = golden_batch(arch);
    at::Tensor base = golden_testing::logits(*model, in);
    model->add_adapter("a", config);
    EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), base, 1e-6, 1e-6)) << arch << " " << config.dump();
  }
}

// Sequential (Houlsby, after attention and FFN): h' = h + s·up(f(down(h))) with h the wrapped projection's output.
TEST(Bottleneck, SequentialOutputIsRecomputedFromTheWeights) {
  auto model = golden_testing::peft("llama");
  auto config = houlsby();
  config["init_weights"] = "bert";
  config["scaling"] = 0.5;
  model->add_adapter("a", config);
  model->eval();
  at::manual_seed(3);
  for (const std::string path : {"model.layers.1.self_attn.o_proj", "model.layers.0.mlp.down_proj"}) {
    auto w = adapter_weights(*model, path, "a");
    at::Tensor x = at::randn({2, 3, w["base_layer.weight"].size(1)});
    at::Tensor h = at::matmul(x, w["base_layer.weight"].t());
    at::Tensor expected = h + 0.5 * linear(at::silu(linear(h, w["adapter_down.weight"], w["adapter_down.bias"])),
                                           w["adapter_up.weight"], w["adapter_up.bias"]);
    at::NoGradGuard no_grad;
    at::Tensor got = peft4j::models::forward_module(*peft4j::tuners::module_at(model->base_model(), path), x);
    EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-6)) << path;
  }
}

// Parallel (He et al.): reads the FFN input x, h' = FFN(x) + s·up(relu(down(x))).
TEST(Bottleneck, ParallelOutputIsRecomputedFromTheWeights) {
  auto model = golden_testing::peft("llama");
  auto config = parallel("learned");
  config["init_weights"] = "bert";
  model->add_adapter("a", config);
  auto layer = std::dynamic_pointer_cast<peft4j::tuners::DeltaLayer>(
      peft4j::tuners::module_at(model->base_model(), "model.layers.0.mlp"));
  ASSERT_TRUE(layer);
  auto w = adapter_weights(*model, "model.layers.0.mlp", "a");
  at::NoGradGuard no_grad;
  w["adapter_scaling"].fill_(1.7);
  at::Tensor x = at::randn({2, 3, model->hidden_size()});
  at::Tensor gate = at::matmul(x, w["base_layer.gate_proj.weight"].t()), up = at::matmul(x, w["base_layer.up_proj.weight"].t());
  at::Tensor ffn = at::matmul(at::silu(gate) * up, w["base_layer.down_proj.weight"].t());
  at::Tensor expected = ffn + 1.7 * linear(at::relu(linear(x, w["adapter_down.weight"], w["adapter_down.bias"])),
                                           w["adapter_up.weight"], w["adapter_up.bias"]);
  model->eval();
  EXPECT_TRUE(at::allclose(layer->forward(x), expected, 1e-5, 1e-6));
}

// BERT with original_ln_before: the adapter reads LN(s) and the block re-normalises, LN(s + Δ(LN(s))).
TEST(Bottleneck, BertNormPlacementIsRecomputedFromTheWeights) {
  auto model = golden_testing::peft("bert");
  auto config = pfeiffer();
  config["original_ln_before"] = true;
  config["init_weights"] = "bert";
  model->add_adapter("a", config);
  const std::string path = "bert.encoder.layer.1.output.LayerNorm";
  auto w = adapter_weights(*model, path, "a");
  at::NoGradGuard no_grad;
  int64_t d = model->hidden_size();
  at::Tensor s = at::randn({2, 3, d});
  auto ln = [&](const at::Tensor& t) { return at::layer_norm(t, {d}, w["base_layer.weight"], w["base_layer.bias"], 1e-12); };
  at::Tensor expected = ln(s + linear(at::relu(linear(ln(s), w["adapter_down.weight"], w["adapter_down.bias"])),
                                      w["adapter_up.weight"], w["adapter_up.bias"]));
  model->eval();
  at::Tensor got = peft4j::models::forward_module(*peft4j::tuners::module_at(model->base_model(), path), s);
  EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-5));
}

TEST(Bottleneck, OptionsThatCannotApplyAreRefused) {
  auto bert = golden_testing::peft("bert");
  expect_error([&] { bert->add_adapter("a", parallel(1.0)); }, ErrorKind::Unsupported, "parallel");
  auto llama = golden_testing::peft("llama");
  auto ln = pfeiffer();
  ln["original_ln_before"] = true;
  expect_error([&] { llama->add_adapter("a", ln); }, ErrorKind::Unsupported, "original_ln_before");
  auto attention_parallel = parallel(1.0);
  attention_parallel["mh_adapter"] = true;
  expect_error([&] { llama->add_adapter("a", attention_parallel); }, ErrorKind::Unsupported, "mh_adapter");
  auto leave = pfeiffer();
  leave["leave_out"] = {0, 1};
  expect_error([&] { llama->add_adapter("a", leave); }, ErrorKind::InvalidArgument, "leave_out");
  EXPECT_TRUE(llama->adapter_names().empty());
  llama->add_adapter("a", houlsby());
  expect_error([&] { llama->merge(); }, ErrorKind::Unsupported, "BOTTLENECK");
}

// AdapterDrop in training: each batch skips the adapters of the lowest n layers, n uniform in [0, L); with L = 2
// every training forward equals either the full adapter or the adapter without layer 0, and both occur.
TEST(Bottleneck, AdapterDropSkipsLowerLayersPerBatchInTraining) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto config = pfeiffer();
  config["init_weights"] = "bert";
  config["adapter_drop"] = true;
  model->add_adapter("a", config);
  auto in = permutation_batch(2, 6, 1);
  at::Tensor full = golden_testing::logits(*model, in);
  std::vector<at::Tensor> seen;
  {
    at::NoGradGuard no_grad;
    model->train();
    at::manual_seed(5);
    for (int i = 0; i < 12; ++i) seen.push_back(model->forward(in).logits);
  }
  for (auto& p : model->base_model().named_parameters())
    if (p.key().find("layers.0.mlp.down_proj.adapters.a.adapter_up") != std::string::npos) p.value().detach().zero_();
  at::Tensor without_layer0 = golden_testing::logits(*model, in);
  int full_count = 0, dropped_count = 0;
  for (const auto& s : seen) {
    if (at::equal(s, full)) ++full_count;
    else if (at::equal(s, without_layer0)) ++dropped_count;
  }
  EXPECT_EQ(full_count + dropped_count, 12);
  EXPECT_GT(full_count, 0);
  EXPECT_GT(dropped_count, 0);
}

TEST(Bottleneck, EachPlacementLearnsThePermutationTask) {
  std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"llama", houlsby()}, {"gpt2", pfeiffer()}, {"llama", parallel(4.0)}, {"llama", parallel("learned")}};
  for (auto [family, config] : cases) {
    config["reduction_factor"] = 2;
    auto model = std::make_shared<PeftModel>(tiny_model(family));
    model->add_adapter("a", config);
    expect_learns(*model, family + " " + config.dump());
  }
}

}  // namespace
