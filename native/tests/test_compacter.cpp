// Compacter, Compacter++ and the PHM adapter: the Kronecker-sum weight recomputed with at::kron, trainable counts
// against the formulas (shared rule matrices counted once), identity init, learning.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/compacter.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using peft4j::tuners::PeftModel;

// AdapterHub's CompacterConfig (Houlsby placement) and CompacterPlusPlusConfig (Pfeiffer placement), with reduction
// factor 8 instead of 32, which would leave 2 bottleneck units on the 64-wide golden models (phm_dim 4 must divide).
nlohmann::json compacter(bool plus_plus) {
  return {{"peft_type", "BOTTLENECK"}, {"mh_adapter", !plus_plus}, {"output_adapter", true},
          {"reduction_factor", 8}, {"non_linearity", "gelu"}, {"phm_layer", true}, {"phm_dim", 4}};
}

TEST(Compacter, TrainableCountsMatchTheFormulas) {
  auto probe = golden_testing::peft("llama");
  const int64_t L = probe->num_layers(), d = probe->hidden_size(), m = d / 8, n = 4;
  {  // Compacter: per PHM layer rank·(in + out) slow weights + out biases; one n×n×n rule per adapter
    auto model = golden_testing::peft("llama");
    model->add_adapter("a", compacter(false));
    EXPECT_EQ(model->trainable_parameter_count(), L * 2 * (2 * (d + m) + (d + m)) + n * n * n);
    EXPECT_EQ(count_named(*model, "phm_rule"), n * n * n);
  }
  {  // Compacter++: the FFN only
    auto model = golden_testing::peft("llama");
    model->add_adapter("a", compacter(true));
    EXPECT_EQ(model->trainable_parameter_count(), L * (2 * (d + m) + (d + m)) + n * n * n);
  }
  {  // PHM adapter: full slow weights n·(in/n)·(out/n) = in·out/n per layer, rules per layer
    auto model = golden_testing::peft("llama");
    auto config = compacter(true);
    config["factorized_phm_W"] = false;
    config["shared_phm_rule"] = false;
    model->add_adapter("a", config);
    EXPECT_EQ(model->trainable_parameter_count(), L * (2 * (d * m / n) + (d + m) + 2 * n * n * n));
  }
}

TEST(Compacter, PhmWeightIsTheKroneckerSum) {
  auto model = golden_testing::peft("llama");
  auto config = compacter(true);
  config["phm_c_init"] = "uniform";
  model->add_adapter("a", config);
  auto layer = std::dynamic_pointer_cast<peft4j::tuners::DeltaLayer>(
      peft4j::tuners::module_at(model->base_model(), "model.layers.0.mlp.down_proj"));
  ASSERT_TRUE(layer);
  auto& down = dynamic_cast<peft4j::tuners::PhmLinear&>(*layer->delta("a").named_children()["adapter_down"]);
  auto params = down.named_parameters(false);
  at::Tensor rule;
  for (const auto& p : model->named_parameters())
    if (p.key() == "base_model.phm_rule.a") rule = p.value().detach();
  ASSERT_TRUE(rule.defined());
  at::Tensor w = at::bmm(params["W_left"], params["W_right"]).detach();
  at::Tensor expected = at::zeros_like(down.weight());
  for (int64_t i = 0; i < 4; ++i) expected += at::kron(rule[i], w[i]);
  EXPECT_TRUE(at::allclose(down.weight(), expected, 1e-6, 1e-7));
  at::Tensor x = at::randn({2, 5, model->hidden_size()});
  EXPECT_TRUE(at::allclose(down.forward(x), at::matmul(x, expected) + params["b"], 1e-5, 1e-6));
}

TEST(Compacter, UntrainedAdaptersLeaveTheLogitsUnchanged) {
  for (bool plus_plus : {false, true})
    for (const std::string arch : {"llama", "gpt2", "bert"}) {
      auto model = golden_testing::peft(arch);
      auto in = golden_batch(arch);
      at::Tensor base = golden_testing::logits(*model, in);
      model->add_adapter("a", compacter(plus_plus));
      EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), base, 1e-6, 1e-6)) << arch;
    }
}

TEST(Compacter, RefusesWidthsThePhmDimensionDoesNotDivide) {
  auto model = golden_testing::peft("llama");
  auto config = compacter(true);
  config["phm_dim"] = 3;
  expect_error([&] { model->add_adapter("a", config); }, peft4j::ErrorKind::InvalidArgument, "phm_dim");
  config = compacter(true);
  config["shared_W_phm"] = true;
  expect_error([&] { model->add_adapter("a", config); }, peft4j::ErrorKind::Unsupported, "shared_W_phm");
}

TEST(Compacter, CompacterAndPhmAdapterLearnThePermutationTask) {
  for (bool factorized : {true, false}) {
    auto config = compacter(false);
    config["reduction_factor"] = 2;
    config["factorized_phm_W"] = factorized;
    config["phm_c_init"] = "uniform";
    auto model = std::make_shared<PeftModel>(tiny_model("llama"));
    model->add_adapter("a", config);
    expect_learns(*model, factorized ? "compacter" : "phm adapter");
  }
}

}  // namespace
