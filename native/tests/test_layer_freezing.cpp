// Layer freezing: the top k layers (or modules by pattern) are trained as copies, saved under the model's keys,
// identity at start, and the method learns.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"

namespace {

using namespace adapter_family_testing;
using peft4j::tuners::PeftModel;

int64_t params_under(peft4j::models::Model& model, const std::string& prefix, std::vector<std::string>* keys = nullptr) {
  int64_t n = 0;
  for (const auto& p : model.named_parameters(true))
    if (p.key().rfind(prefix, 0) == 0) {
      n += p.value().numel();
      if (keys) keys->push_back("base_model.model." + p.key());
    }
  return n;
}

TEST(LayerFreezing, TopLayersAreTrainedAndSavedUnderTheModelsKeys) {
  auto model = golden_testing::peft("llama");
  std::vector<std::string> keys;
  int64_t top = params_under(model->base_model(), "model.layers.1.", &keys);
  auto in = golden_batch("llama");
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("a", {{"peft_type", "LAYER_FREEZING"}, {"num_trainable_layers", 1}});
  EXPECT_EQ(model->trainable_parameter_count(), top);
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));
  std::vector<std::string> saved;
  for (const auto& [key, t] : model->adapter_state_dict("a")) saved.push_back(key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(saved, keys);
}

TEST(LayerFreezing, ModulesByPattern) {
  auto model = golden_testing::peft("gpt2");
  int64_t mlps = params_under(model->base_model(), "transformer.h.0.mlp.") +
                 params_under(model->base_model(), "transformer.h.1.mlp.");
  model->add_adapter("a", {{"peft_type", "LAYER_FREEZING"}, {"trainable_modules", R"(transformer\.h\.\d+\.mlp)"}});
  EXPECT_EQ(model->trainable_parameter_count(), mlps);
  golden_testing::expect_error(
      [&] { model->add_adapter("b", {{"peft_type", "LAYER_FREEZING"}, {"trainable_modules", "nothing"}}); },
      peft4j::ErrorKind::InvalidArgument, "no module");
}

TEST(LayerFreezing, SaveLoadAndLearn) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("a", {{"peft_type", "LAYER_FREEZING"}, {"num_trainable_layers", 1}});
  expect_learns(*model, "layer freezing");
  auto in = permutation_batch(4, 8, 3);
  at::Tensor trained = golden_testing::logits(*model, in);
  std::string dir = golden_testing::temp_dir("layer_freezing");
  model->save_adapter(dir, "a");
  auto fresh = std::make_shared<PeftModel>(tiny_model("llama"));
  fresh->load_adapter(dir, "a");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), trained));
}

}  // namespace
