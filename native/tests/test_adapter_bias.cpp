// AdapterBias: count 2·d_h per layer, identity init, Δh = (h·α)·v recomputed, merge into the FFN projection and
// back (Sherman-Morrison), learning.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/adapter_bias.h"
#include "peft4j/tuners/config.h"

namespace {

using namespace adapter_family_testing;
using peft4j::tuners::PeftModel;

const nlohmann::json kConfig = {{"peft_type", "ADAPTER_BIAS"}};

TEST(AdapterBias, TrainableCountIsTwoVectorsPerLayer) {
  for (const std::string arch : {"llama", "gpt2", "bert"}) {
    auto model = golden_testing::peft(arch);
    model->add_adapter("a", kConfig);
    EXPECT_EQ(model->trainable_parameter_count(), model->num_layers() * 2 * model->hidden_size()) << arch;
    auto dropped = golden_testing::peft(arch);
    dropped->add_adapter("a", {{"peft_type", "ADAPTER_BIAS"}, {"leave_out", {0}}});
    EXPECT_EQ(dropped->trainable_parameter_count(), (model->num_layers() - 1) * 2 * model->hidden_size()) << arch;
  }
}

TEST(AdapterBias, IdentityInitAndRecomputedShift) {
  auto model = golden_testing::peft("gpt2");
  auto in = golden_batch("gpt2");
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("a", kConfig);
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));

  auto layer = peft4j::tuners::module_at(model->base_model(), "transformer.h.1.mlp.c_proj");
  auto params = layer->named_parameters(true);
  at::NoGradGuard no_grad;
  params["adapters.a.v"].normal_();
  at::Tensor x = at::randn({2, 3, params["base_layer.weight"].size(0)});
  at::Tensor h = at::matmul(x, params["base_layer.weight"]) + params["base_layer.bias"];
  at::Tensor expected = h + at::matmul(at::matmul(h, params["adapters.a.alpha"]), params["adapters.a.v"]);
  model->eval();
  EXPECT_TRUE(at::allclose(peft4j::models::forward_module(*layer, x), expected, 1e-5, 1e-6));
}

TEST(AdapterBias, MergeEqualsUnmergedAndUnmergeRestores) {
  for (const std::string arch : {"llama", "gpt2", "bert"}) {
    auto model = golden_testing::peft(arch);
    auto in = golden_batch(arch);
    auto weights = golden_testing::base_weights(*model);
    model->add_adapter("a", {{"peft_type", "ADAPTER_BIAS"}, {"init_weights", false}});
    at::Tensor adapted = golden_testing::logits(*model, in);
    model->merge();
    EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), adapted, 1e-4, 1e-5)) << arch;
    model->unmerge();
    for (const auto& p : model->base_model().named_parameters()) {
      std::string key = p.key();
      auto pos = key.find(".base_layer");
      if (pos != std::string::npos) key.erase(pos, 11);
      if (weights.count(key)) EXPECT_TRUE(at::allclose(p.value(), weights[key], 1e-5, 1e-6)) << arch << " " << key;
    }
  }
}

TEST(AdapterBias, LearnsThePermutationTask) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("a", kConfig);
  expect_learns(*model, "adapter bias");
}

}  // namespace
