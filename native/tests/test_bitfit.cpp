// BitFit: trains exactly the model's biases (+ a classifier head), saves them under the model's own keys, starts as
// the identity, merges and learns.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/bitfit.h"

namespace {

using namespace adapter_family_testing;
using peft4j::tuners::PeftModel;

const nlohmann::json kConfig = {{"peft_type", "BITFIT"}};

int64_t bias_count(peft4j::models::Model& model, std::vector<std::string>* keys = nullptr) {
  int64_t n = 0;
  for (const auto& p : model.named_parameters(true))
    if (p.key().size() > 5 && p.key().compare(p.key().size() - 5, 5, ".bias") == 0) {
      n += p.value().numel();
      if (keys) keys->push_back("base_model.model." + p.key());
    }
  return n;
}

TEST(BitFit, TrainsTheModelsBiasesAndTheHead) {
  auto gpt2 = golden_testing::peft("gpt2");
  std::vector<std::string> keys;
  int64_t biases = bias_count(gpt2->base_model(), &keys);
  gpt2->add_adapter("a", kConfig);
  EXPECT_EQ(gpt2->trainable_parameter_count(), biases);
  std::vector<std::string> saved;
  for (const auto& [key, t] : gpt2->adapter_state_dict("a")) saved.push_back(key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(saved, keys) << "the adapter holds exactly the biases, under the model's keys";

  auto bert = golden_testing::peft("bert");
  int64_t bert_biases = bias_count(bert->base_model());
  int64_t head = bert->base_model().named_parameters()["classifier.weight"].numel();
  bert->add_adapter("a", kConfig);
  EXPECT_EQ(bert->trainable_parameter_count(), bert_biases + head);
}

TEST(BitFit, IdentitySaveLoadAndMerge) {
  auto model = golden_testing::peft("bert");
  auto in = golden_batch("bert");
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("a", kConfig);
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->trainable_parameters()) p.add_(at::randn_like(p) * 0.1);
  }
  at::Tensor tuned = golden_testing::logits(*model, in);
  EXPECT_FALSE(at::allclose(tuned, base));
  std::string dir = golden_testing::temp_dir("bitfit");
  model->save_adapter(dir, "a");
  auto fresh = golden_testing::peft("bert");
  fresh->load_adapter(dir, "a");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), tuned));
  // The saved biases are the adapter's values under the base keys.
  auto file = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.count("base_model.model.bert.encoder.layer.0.output.dense.bias"));
  model->merge();
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), tuned, 1e-5, 1e-5));
  model->unmerge();
  model->set_disabled(true);
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), base, 1e-6, 1e-6));
}

TEST(BitFit, LearnsThePermutationTask) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  model->add_adapter("a", kConfig);
  expect_learns(*model, "bitfit", 3e-2);  // few parameters: a larger step, as the BitFit paper uses
}

TEST(BitFit, RefusesAModelWithoutBiases) {
  auto llama = golden_testing::peft("llama");
  golden_testing::expect_error([&] { llama->add_adapter("a", kConfig); }, peft4j::ErrorKind::InvalidArgument, "no biases");
}

}  // namespace
