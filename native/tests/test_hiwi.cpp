// HiWi: the identity at init, p′ recomputed from the adapter's networks with plain ops (biases, Linear weights row by
// row, GPT-2's transposed Conv1D weights), the merged model bit-identical to the adapter path, the saved adapter p′
// alone whatever r, and the training count 2nr + r + n per adapted tensor.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/hiwi.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::HiwiLayer;
using peft4j::tuners::PeftModel;

void perturb(PeftModel& model) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : model.trainable_parameters()) p.add_(at::randn_like(p) * 0.2);
}

at::Tensor named(PeftModel& model, const std::string& path, const std::string& rest) {
  for (const auto& [name, p] : model.trainable_parameters())
    if (name.find(path + "." + rest) != std::string::npos) return p;
  throw std::runtime_error("no parameter " + path + "." + rest);
}

TEST(Hiwi, DefaultTargetsTheFeedForwardBiasesAsAnIdentityWithCount2nrPlusRPlusN) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  auto in = permutation_batch(4, 8, 11);
  at::Tensor base = golden_testing::logits(*model, in);
  model->add_adapter("default", {{"peft_type", "HIWI"}, {"r", 4}});
  EXPECT_TRUE(at::equal(golden_testing::logits(*model, in), base));
  std::vector<std::string> paths;
  for (const auto& [path, layer] : model->adapter_layers()) paths.push_back(path);
  EXPECT_EQ(paths, (std::vector<std::string>{"transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
                                             "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"}));
  // c_fc's bias n = 64, c_proj's n = 32, r = 4.
  const int64_t per_layer = (2 * 64 * 4 + 4 + 64) + (2 * 32 * 4 + 4 + 32);
  EXPECT_EQ(model->trainable_parameter_count(), 2 * per_layer);
}

TEST(Hiwi, BiasAndWeightRowsAreRecomputedWithPlainOps) {
  // GPT-2: the bias of c_fc, and the Conv1D weight [in, out] whose Linear-layout rows are its columns.
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  model->add_adapter("default", {{"peft_type", "HIWI"}, {"r", 3}, {"target_modules", {"c_fc"}},
                                 {"target_parameters", {"bias", "weight"}}});
  perturb(*model);
  const std::string path = "transformer.h.0.mlp.c_fc";
  auto* layer = dynamic_cast<HiwiLayer*>(model->adapter_layers().front().second);
  ASSERT_NE(layer, nullptr);
  auto transform = [&](const at::Tensor& rows, const std::string& which) {
    at::Tensor h = at::relu(at::linear(rows, named(*model, path, "hiwi_" + which + ".default.down.weight"),
                                       named(*model, path, "hiwi_" + which + ".default.down.bias")));
    return rows + at::linear(h, named(*model, path, "hiwi_" + which + ".default.up.weight"),
                             named(*model, path, "hiwi_" + which + ".default.up.bias"));
  };
  at::Tensor w = layer->base_parameter("weight"), b = layer->base_parameter("bias");  // [32, 64], [64]
  at::Tensor b2 = transform(b.unsqueeze(0), "bias").squeeze(0);
  at::Tensor w2 = transform(w.t(), "weight").t();
  at::Tensor x = at::randn({2, 5, 32});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer->forward(x), at::matmul(x, w2) + b2, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(layer->merged_parameter("default", "bias"), b2, 1e-6, 1e-6));

  // Llama: Linear weights row by row (rows of in = 32).
  auto llama = std::make_shared<PeftModel>(tiny_model("llama"));
  llama->add_adapter("default", {{"peft_type", "HIWI"}, {"r", 2}, {"target_modules", {"up_proj"}},
                                 {"target_parameters", {"weight"}}});
  perturb(*llama);
  auto* up = dynamic_cast<HiwiLayer*>(llama->adapter_layers().front().second);
  const std::string up_path = llama->adapter_layers().front().first;
  at::Tensor uw = up->base_parameter("weight");  // [64, 32]
  at::Tensor h = at::relu(at::linear(uw, named(*llama, up_path, "hiwi_weight.default.down.weight"),
                                     named(*llama, up_path, "hiwi_weight.default.down.bias")));
  at::Tensor uw2 = uw + at::linear(h, named(*llama, up_path, "hiwi_weight.default.up.weight"),
                                   named(*llama, up_path, "hiwi_weight.default.up.bias"));
  at::Tensor ux = at::randn({3, 32});
  EXPECT_TRUE(at::allclose(up->forward(ux), at::linear(ux, uw2), 1e-5, 1e-5));
}

TEST(Hiwi, MergedModelIsBitIdenticalAndTheSavedAdapterIsPPrimeWhateverR) {
  auto in = permutation_batch(4, 8, 11);
  std::map<std::string, std::vector<int64_t>> shapes_by_r;
  for (int64_t r : {2, 16}) {
    auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
    model->add_adapter("default", {{"peft_type", "HIWI"}, {"r", r}});
    train(*model, 8);
    at::Tensor adapted = golden_testing::logits(*model, in);
    auto saved = model->adapter_state_dict("default");
    int64_t stored = 0;
    for (const auto& [key, t] : saved) {
      EXPECT_EQ(key.substr(key.size() - 5), ".bias") << key;
      EXPECT_EQ(key.find("hiwi"), std::string::npos) << key;
      stored += t.numel();
    }
    EXPECT_EQ(stored, 2 * (64 + 32)) << "r " << r;  // |p|: the FFN biases, whatever r
    const std::string dir = golden_testing::temp_dir("hiwi_r" + std::to_string(r));
    model->save_adapter(dir, "default");
    auto fresh = std::make_shared<PeftModel>(tiny_model("gpt2"));
    fresh->load_adapter(dir, "default");
    EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), adapted));
    auto merged = model->merge_and_unload();
    EXPECT_TRUE(at::equal(golden_testing::logits(*merged, in), adapted)) << "merging changed the logits, r " << r;
    for (const auto& [key, t] : saved) {
      const std::string model_key = key.substr(std::string("base_model.model.").size());
      EXPECT_TRUE(at::equal(merged->named_parameters()[model_key], t)) << model_key;
    }
  }
}

TEST(Hiwi, RefusesWhatItCannotAdaptByField) {
  auto llama = std::make_shared<PeftModel>(tiny_model("llama"));
  golden_testing::expect_error([&] { llama->add_adapter("a", {{"peft_type", "HIWI"}}); }, ErrorKind::InvalidArgument,
                               "'target_parameters' names \"bias\"");
  golden_testing::expect_error([&] {
    llama->add_adapter("a", {{"peft_type", "HIWI"}, {"target_modules", {"up_proj"}}, {"target_parameters", {"scale"}}});
  }, ErrorKind::InvalidArgument, "target_parameters");
  golden_testing::expect_error([&] { llama->add_adapter("a", {{"peft_type", "HIWI"}, {"r", 0}}); },
                               ErrorKind::InvalidArgument, "'r'");
  golden_testing::expect_error([&] { llama->add_adapter("a", {{"peft_type", "HIWI"}, {"non_linearity", "nope"}}); },
                               ErrorKind::Unsupported, "non_linearity");
  EXPECT_TRUE(llama->adapter_names().empty());
}

}  // namespace
