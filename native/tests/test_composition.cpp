// AdapterHub's Average and Parallel blocks over bottleneck adapters (composition.h), against plain tensor ops and
// the adapters run one at a time.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/composition.h"
#include "peft4j/tuners/config.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using golden_testing::logits;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

// Adapters "a" and "b" (`placement` fields) with every tensor moved off its initialisation.
std::shared_ptr<PeftModel> two_adapters(const nlohmann::json& placement) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  nlohmann::json config = placement;
  config["peft_type"] = "BOTTLENECK";
  model->add_adapter("a", config);
  model->add_adapter("b", config);
  at::manual_seed(5);
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(true))
    if (p.key().find(".adapters.") != std::string::npos) p.value().add_(at::randn_like(p.value()) * 0.3);
  return model;
}

nlohmann::json average_of(const nlohmann::json& placement, const nlohmann::json& extra) {
  nlohmann::json config = placement;
  config.update(extra);
  config["peft_type"] = "BOTTLENECK";
  return config;
}

// relu(z·W_downᵀ + b_down)·W_upᵀ + b_up of adapter `name` on the DeltaLayer `layer`.
at::Tensor bottleneck_delta(torch::nn::Module& layer, const std::string& name, const at::Tensor& z) {
  auto p = layer.named_parameters(true);
  const std::string prefix = "adapters." + name + ".";
  at::Tensor hidden = at::relu(at::matmul(z, p[prefix + "adapter_down.weight"].t()) + p[prefix + "adapter_down.bias"]);
  return at::matmul(hidden, p[prefix + "adapter_up.weight"].t()) + p[prefix + "adapter_up.bias"];
}

const nlohmann::json kSequential = {{"reduction_factor", 4}};

TEST(CompositionAverage, SublayerOutputIsTheWeightedSumOfEachAdaptersOutput) {
  for (bool normalize : {true, false}) {
    auto model = two_adapters(kSequential);
    model->add_adapter("avg", average_of(kSequential, {{"average", {"a", "b"}}, {"average_weights", {1.0, 3.0}},
                                                       {"normalize_weights", normalize}}));
    model->set_adapter("avg");
    EXPECT_EQ(model->trainable_parameter_count(), 0);
    auto layer = peft4j::tuners::module_at(model->base_model(), "model.layers.1.mlp.down_proj");
    auto& delta_layer = dynamic_cast<peft4j::tuners::DeltaLayer&>(*layer);
    at::NoGradGuard no_grad;
    model->eval();
    at::Tensor x = at::randn({2, 5, 64});
    at::Tensor h = delta_layer.base_forward(x);
    const double wa = normalize ? 0.25 : 1.0, wb = normalize ? 0.75 : 3.0;
    at::Tensor expected = (h + bottleneck_delta(delta_layer, "a", h)) * wa + (h + bottleneck_delta(delta_layer, "b", h)) * wb;
    EXPECT_TRUE(at::allclose(delta_layer.forward(x), expected, 1e-5, 1e-5)) << "normalize " << normalize;
  }
}

TEST(CompositionAverage, ParallelAdaptersAndDegenerateWeights) {
  const nlohmann::json parallel = {{"is_parallel", true}, {"reduction_factor", 2}, {"scaling", 4.0}};
  auto model = two_adapters(parallel);
  auto in = permutation_batch(4, 8, 11);
  model->set_adapter("a");
  at::Tensor a = logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = logits(*model, in);
  // h' = mlp(x) + 4·(w_a·Δ_a(x) + w_b·Δ_b(x)) at each FFN.
  model->add_adapter("avg", average_of(parallel, {{"average", {"a", "b"}}, {"average_weights", {2.0, 6.0}}}));
  model->set_adapter("avg");
  auto layer = peft4j::tuners::module_at(model->base_model(), "model.layers.0.mlp");
  auto& delta_layer = dynamic_cast<peft4j::tuners::DeltaLayer&>(*layer);
  {
    at::NoGradGuard no_grad;
    model->eval();
    at::Tensor x = at::randn({2, 5, kHidden});
    at::Tensor expected = delta_layer.base_forward(x) + bottleneck_delta(delta_layer, "a", x) * (4.0 * 0.25) +
                          bottleneck_delta(delta_layer, "b", x) * (4.0 * 0.75);
    EXPECT_TRUE(at::allclose(delta_layer.forward(x), expected, 1e-5, 1e-5));
  }
  // All weight on one adapter: that adapter alone, through every layer.
  model->add_adapter("only_a", average_of(parallel, {{"average", {"a", "b"}}, {"average_weights", {1.0, 0.0}}}));
  model->set_adapter("only_a");
  EXPECT_TRUE(at::allclose(logits(*model, in), a, 1e-5, 1e-5));
  model->add_adapter("only_b", average_of(parallel, {{"average", {"a", "b"}}, {"average_weights", {0.0, 2.0}}}));
  model->set_adapter("only_b");
  EXPECT_TRUE(at::allclose(logits(*model, in), b, 1e-5, 1e-5));

  expect_error([&] { model->add_adapter("raw", average_of(parallel, {{"average", {"a", "b"}}, {"normalize_weights", false},
                                                                     {"average_weights", {1.0, 1.0}}})); },
               ErrorKind::Unsupported, "sequential");
  expect_error([&] { model->add_adapter("missing", average_of(parallel, {{"average", {"a", "c"}}})); },
               ErrorKind::InvalidArgument, "'c'");
  expect_error([&] { model->add_adapter("bad", average_of(parallel, {{"average", {"a", "b"}}, {"average_weights", {1.0}}})); },
               ErrorKind::InvalidArgument, "average_weights");
}

TEST(CompositionParallel, EachCopyOfTheBatchGoesThroughItsAdapter) {
  auto model = two_adapters(kSequential);
  auto in = permutation_batch(3, 8, 11);
  std::vector<at::Tensor> alone, losses;
  for (const char* name : {"a", "b"}) {
    model->set_adapter(name);
    model->eval();
    at::NoGradGuard no_grad;
    auto out = model->forward(in);
    alone.push_back(out.logits);
    losses.push_back(out.loss);
  }
  at::NoGradGuard no_grad;
  auto out = peft4j::tuners::forward_parallel(*model, in, {"a", "b"});
  ASSERT_EQ(out.logits.size(0), 6);
  EXPECT_TRUE(at::allclose(out.logits.slice(0, 0, 3), alone[0], 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(out.logits.slice(0, 3, 6), alone[1], 1e-5, 1e-5));
  // Every copy has as many label tokens, so the loss over all copies is the mean of the two.
  EXPECT_NEAR(out.loss.item<double>(), (losses[0].item<double>() + losses[1].item<double>()) / 2, 1e-5);
  expect_error([&] { peft4j::tuners::forward_parallel(*model, in, {"a", "nope"}); }, ErrorKind::NotFound, "nope");
}

}  // namespace
