// AdapterFusion: trainable count 3·d_h² + 2·d_h per sublayer with the fused adapters frozen, the fused output
// recomputed with plain tensor ops, and a fusion of two task adapters beating either alone on the mixed task.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/adapter_fusion.h"
#include "peft4j/tuners/config.h"

namespace {

using namespace adapter_family_testing;
using peft4j::tuners::PeftModel;

nlohmann::json adapter() {
  return {{"peft_type", "BOTTLENECK"}, {"reduction_factor", 2}, {"init_weights", "bert"}};
}
const nlohmann::json kFusion = {{"peft_type", "BOTTLENECK"}, {"fusion", {"a", "b"}}};

TEST(AdapterFusion, TrainsOnlyTheFusionAndRecomputesItsOutput) {
  auto model = golden_testing::peft("llama");
  model->add_adapter("a", adapter());
  model->add_adapter("b", adapter());
  model->add_adapter("fusion", kFusion);
  model->set_adapter("fusion");
  const int64_t d = model->hidden_size();
  EXPECT_EQ(model->trainable_parameter_count(), model->num_layers() * (3 * d * d + 2 * d));

  auto layer = std::dynamic_pointer_cast<peft4j::tuners::DeltaLayer>(
      peft4j::tuners::module_at(model->base_model(), "model.layers.0.mlp.down_proj"));
  ASSERT_TRUE(layer);
  auto p = layer->named_parameters(true);
  at::NoGradGuard no_grad;
  p["adapters.fusion.value.weight"].normal_(0.0, 0.1);
  at::Tensor x = at::randn({2, 3, p["base_layer.weight"].size(1)});
  at::Tensor h = at::matmul(x, p["base_layer.weight"].t());
  auto linear = [](const at::Tensor& t, const at::Tensor& w, const at::Tensor& b) { return at::matmul(t, w.t()) + b; };
  auto delta = [&](const std::string& n) {
    return linear(at::relu(linear(h, p["adapters." + n + ".adapter_down.weight"], p["adapters." + n + ".adapter_down.bias"])),
                  p["adapters." + n + ".adapter_up.weight"], p["adapters." + n + ".adapter_up.bias"]);
  };
  at::Tensor q = linear(h, p["adapters.fusion.query.weight"], p["adapters.fusion.query.bias"]);
  at::Tensor expected = h;
  std::vector<at::Tensor> scores, values;
  for (const std::string n : {"a", "b"}) {
    at::Tensor k = linear(delta(n), p["adapters.fusion.key.weight"], p["adapters.fusion.key.bias"]);
    scores.push_back((q * k).sum(-1));
    values.push_back(at::matmul(delta(n), p["adapters.fusion.value.weight"].t()));
  }
  at::Tensor w = at::softmax(at::stack(scores, -1), -1);
  expected = h + w.select(-1, 0).unsqueeze(-1) * values[0] + w.select(-1, 1).unsqueeze(-1) * values[1];
  model->eval();
  EXPECT_TRUE(at::allclose(layer->forward(x), expected, 1e-5, 1e-5));
}

TEST(AdapterFusion, RefusesMissingAdapters) {
  auto model = golden_testing::peft("llama");
  model->add_adapter("a", adapter());
  golden_testing::expect_error([&] { model->add_adapter("fusion", kFusion); }, peft4j::ErrorKind::InvalidArgument,
                               "'b'");
  EXPECT_EQ(model->adapter_names(), std::vector<std::string>{"a"});
}

// Two tasks on disjoint halves of the vocabulary, each a fixed permutation of its half: x_{t+1} = π_task(x_t).
peft4j::models::ModelInputs task_batch(int task, int64_t rows, uint64_t seed) {
  const int64_t half = kVocab / 2;
  at::manual_seed(11);
  at::Tensor pi[2] = {at::randperm(half, at::kLong), at::randperm(half, at::kLong) + half};
  at::manual_seed(seed);
  at::Tensor ids = at::empty({rows, 10}, at::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    int t = task >= 0 ? task : static_cast<int>(r % 2);  // -1: the mixed task, alternating rows
    ids[r][0] = at::randint(half, {1}, at::kLong).item<int64_t>() + t * half;
    for (int64_t i = 1; i < 10; ++i) ids[r][i] = pi[t][ids[r][i - 1].item<int64_t>() - t * half];
  }
  peft4j::models::ModelInputs in;
  in.input_ids = ids;
  in.labels = ids;
  return in;
}

void train_on(PeftModel& model, int task, int steps) {
  std::vector<at::Tensor> params;
  for (auto& [n, p] : model.trainable_parameters()) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(1e-2).weight_decay(0.0));
  model.train();
  for (int step = 0; step < steps; ++step) {
    adamw.zero_grad();
    model.forward(task_batch(task, 16, 500 + step)).loss.backward();
    adamw.step();
  }
}

TEST(AdapterFusion, FusionOfTwoTaskAdaptersBeatsEitherOnTheMixedTask) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("a", {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"reduction_factor", 2}});
  model->add_adapter("b", {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"reduction_factor", 2}});
  model->set_adapter("a");
  train_on(*model, 0, 100);
  model->set_adapter("b");
  train_on(*model, 1, 100);
  auto held_out = task_batch(-1, 32, 4242);
  model->set_adapter("a");
  double a_alone = loss(*model, held_out);
  model->set_adapter("b");
  double b_alone = loss(*model, held_out);
  model->add_adapter("fusion", {{"peft_type", "BOTTLENECK"}, {"mh_adapter", true}, {"fusion", {"a", "b"}}});
  model->set_adapter("fusion");
  auto frozen = model->adapter_state_dict("a");
  train_on(*model, -1, 100);
  double fused = loss(*model, held_out);
  EXPECT_LT(fused, std::min(a_alone, b_alone) - 0.1) << "a " << a_alone << ", b " << b_alone << ", fusion " << fused;
  for (const auto& [key, t] : model->adapter_state_dict("a")) EXPECT_TRUE(at::equal(t, frozen.at(key))) << key;
}

}  // namespace
