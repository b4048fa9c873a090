// PaFi: the mask is a stable argsort of |θ₀| over the targeted weights (or of their Fisher information over the
// calibration examples, recomputed here with plain autograd), only masked entries change, the mask does not depend on
// the task, merging is exact and the saved adapter is the k values (plus the indices for a Fisher mask).
#include <gtest/gtest.h>

#include <algorithm>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/train/training_data.h"
#include "peft4j/tuners/pafi.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::PafiLayer;
using peft4j::tuners::PeftModel;

const nlohmann::json kConfig = {{"peft_type", "PAFI"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}, {"k", 300}};

std::vector<std::pair<std::string, PafiLayer*>> pafi_layers(PeftModel& model) {
  std::vector<std::pair<std::string, PafiLayer*>> out;
  for (const auto& [path, layer] : model.adapter_layers())
    if (auto* p = dynamic_cast<PafiLayer*>(layer)) out.emplace_back(path, p);
  return out;
}

// The layers' masks as (layer index, flat index) pairs in layer order.
std::vector<std::pair<size_t, int64_t>> mask_of(PeftModel& model, const std::string& adapter) {
  std::vector<std::pair<size_t, int64_t>> out;
  auto layers = pafi_layers(model);
  for (size_t i = 0; i < layers.size(); ++i) {
    at::Tensor idx = layers[i].second->indices(adapter).to(at::kLong);
    for (int64_t j = 0; j < idx.numel(); ++j) out.emplace_back(i, idx[j].item<int64_t>());
  }
  return out;
}

// Reference: (1/N)·Σ per-example squared gradients of the plain model's loss for kConfig's targets, in layer order.
std::vector<at::Tensor> reference_fisher(const std::vector<peft4j::models::ModelInputs>& examples) {
  auto reference = tiny_model("llama");
  std::vector<std::string> names = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                                    "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                                    "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.down_proj.weight"};
  std::vector<at::Tensor> fisher;
  for (const auto& n : names) fisher.push_back(at::zeros_like(reference->named_parameters()[n]));
  reference->eval();
  for (const auto& e : examples) {
    for (auto& p : reference->parameters()) p.mutable_grad() = at::Tensor();
    reference->forward(e).loss.backward();
    for (size_t i = 0; i < names.size(); ++i) fisher[i] += reference->named_parameters()[names[i]].grad().square();
  }
  for (auto& f : fisher) f /= static_cast<double>(examples.size());
  return fisher;
}

// The k smallest scores of the layers' weights by a stable sort over all of them, in the same form.
std::vector<std::pair<size_t, int64_t>> smallest(const std::vector<at::Tensor>& scores, int64_t k) {
  std::vector<std::tuple<float, size_t, int64_t>> all;
  for (size_t t = 0; t < scores.size(); ++t) {
    at::Tensor flat = scores[t].reshape(-1).contiguous();
    for (int64_t i = 0; i < flat.numel(); ++i) all.emplace_back(flat[i].item<float>(), t, i);
  }
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::vector<std::pair<size_t, int64_t>> out;
  for (int64_t i = 0; i < k; ++i) out.emplace_back(std::get<1>(all[i]), std::get<2>(all[i]));
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Pafi, MaskIsTheStableArgsortOfMagnitudesAndCountIsK) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("default", kConfig);
  EXPECT_EQ(model->trainable_parameter_count(), 300);
  std::vector<at::Tensor> scores;
  for (const auto& [path, layer] : pafi_layers(*model)) scores.push_back(layer->base_parameter("weight").abs());
  EXPECT_EQ(scores.size(), 6u);  // q, v, down in 2 layers
  EXPECT_EQ(mask_of(*model, "default"), smallest(scores, 300));
}

TEST(Pafi, OnlyMaskedEntriesChangeAndTwoTasksGetTheSameMask) {
  auto first = std::make_shared<PeftModel>(tiny_model("llama"));
  auto base = golden_testing::base_weights(*first);
  first->add_adapter("default", kConfig);
  train(*first, 10);
  auto mask = mask_of(*first, "default");
  auto layers = pafi_layers(*first);
  std::vector<std::string> paths;
  for (const auto& [path, layer] : layers) paths.push_back(path);
  auto merged = first->merge_and_unload();
  int64_t changed = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    at::Tensor now = merged->named_parameters()[paths[i] + ".weight"].reshape(-1);
    at::Tensor before = base.at(paths[i] + ".weight").reshape(-1);
    at::Tensor differs = now.ne(before).nonzero().view(-1);
    for (int64_t j = 0; j < differs.numel(); ++j) {
      ++changed;
      EXPECT_TRUE(std::binary_search(mask.begin(), mask.end(), std::make_pair(i, differs[j].item<int64_t>())))
          << paths[i] << " entry " << differs[j].item<int64_t>() << " changed outside the mask";
    }
  }
  EXPECT_GT(changed, 150);  // training moved most masked entries
  for (const auto& p : merged->named_parameters())
    if (p.key().find("q_proj") == std::string::npos && p.key().find("v_proj") == std::string::npos &&
        p.key().find("down_proj") == std::string::npos)
      EXPECT_TRUE(at::equal(p.value(), base.at(p.key()))) << p.key();

  // Another task (a different permutation's data would do; here other rows and steps): the same mask.
  auto second = std::make_shared<PeftModel>(tiny_model("llama"));
  second->add_adapter("other", kConfig);
  second->train();
  {
    auto out = second->forward(permutation_batch(8, 6, 4242));
    out.loss.backward();
  }
  EXPECT_EQ(mask_of(*second, "other"), mask);
}

TEST(Pafi, MergedModelEqualsTheTrainingForwardAndSavesOnlyTheValues) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("default", kConfig);
  train(*model, 10);
  auto in = permutation_batch(4, 8, 11);
  at::Tensor adapted = golden_testing::logits(*model, in);
  // The layer's output recomputed with plain ops: W + scatter(δ).
  for (const auto& [path, layer] : pafi_layers(*model)) {
    at::Tensor w = layer->base_parameter("weight");
    at::Tensor dense = at::zeros({w.numel()}).index_put_({layer->indices("default").to(at::kLong)}, layer->values("default"));
    at::Tensor x = at::randn({3, w.size(1)});
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(layer->forward(x), at::linear(x, w + dense.view(w.sizes())), 1e-6, 1e-6)) << path;
  }
  auto io = model->adapter_state_dict("default");
  EXPECT_EQ(io.size(), 6u);
  int64_t stored = 0;
  for (const auto& [key, t] : io) {
    EXPECT_NE(key.find(".pafi_values"), std::string::npos) << key;
    stored += t.numel();
  }
  EXPECT_EQ(stored, 300);
  const std::string dir = golden_testing::temp_dir("pafi_saved");
  model->save_adapter(dir, "default");
  auto fresh = std::make_shared<PeftModel>(tiny_model("llama"));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), adapted));
  model->merge();
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), adapted, 1e-5, 1e-6));
}

TEST(Pafi, FisherMaskTakesTheLeastInformativeEntriesOverTheCalibrationExamples) {
  std::vector<peft4j::models::ModelInputs> examples;
  for (int i = 0; i < 3; ++i) examples.push_back(permutation_batch(1, 6, 500 + i));
  std::vector<at::Tensor> fisher = reference_fisher(examples);

  auto config = kConfig;
  config["mask_type"] = "fisher";
  config["k"] = 200;
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  golden_testing::expect_error([&] { model->add_adapter("default", config); }, ErrorKind::InvalidArgument,
                               "calibration");
  model->add_adapter("default", config, examples);
  EXPECT_EQ(mask_of(*model, "default"), smallest(fisher, 200));
  // Scoring left the base weights frozen (their gradients were only needed for the scores).
  for (const auto& p : model->base_model().named_parameters())
    if (p.key().find("pafi_") == std::string::npos) EXPECT_FALSE(p.value().requires_grad()) << p.key();

  // A Fisher mask is saved with the adapter and comes back without data.
  train(*model, 5);
  auto in = permutation_batch(4, 8, 11);
  at::Tensor adapted = golden_testing::logits(*model, in);
  const std::string dir = golden_testing::temp_dir("pafi_fisher");
  model->save_adapter(dir, "default");
  auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(saved.count("base_model.model.model.layers.0.mlp.down_proj.pafi_indices"));
  auto fresh = std::make_shared<PeftModel>(tiny_model("llama"));
  fresh->load_adapter(dir, "default");
  EXPECT_EQ(mask_of(*fresh, "default"), mask_of(*model, "default"));
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), adapted));
}

TEST(Pafi, RefusesBadConfigsByField) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto with = [](nlohmann::json patch) {
    nlohmann::json c = kConfig;
    c.update(patch);
    return c;
  };
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"k", 0}})); }, ErrorKind::InvalidArgument, "'k'");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"k", 1000000}})); }, ErrorKind::InvalidArgument,
                               "exceeds");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"k", nullptr}})); }, ErrorKind::InvalidArgument,
                               "no biases");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"mask_type", "movement"}})); },
                               ErrorKind::InvalidArgument, "mask_type");
  EXPECT_TRUE(model->adapter_names().empty());
  // k null means BitFit's count where the model has biases (gpt2).
  auto gpt2 = std::make_shared<PeftModel>(tiny_model("gpt2"));
  gpt2->add_adapter("default", {{"peft_type", "PAFI"}, {"target_modules", {"c_attn"}}});
  int64_t biases = 0;
  for (const auto& p : tiny_model("gpt2")->named_parameters())
    if (p.key().size() > 5 && p.key().compare(p.key().size() - 5, 5, ".bias") == 0) biases += p.value().numel();
  EXPECT_EQ(gpt2->trainable_parameter_count(), biases);
}

// The data comes as the trainer collates it (PeftModel::add_adapter's `data`, shared with LoRA's data-driven inits):
// examples of different lengths two to a right-padded batch give the Fisher information of each example alone.
TEST(Pafi, FisherMaskReadsEachExampleAloneHoweverTheDataIsBatched) {
  const std::vector<std::vector<int64_t>> sequences = {{1, 5, 9, 3, 7, 2}, {2, 7, 4, 8}, {6, 3, 1, 9, 4}};
  std::vector<peft4j::train::Example> examples;
  for (const auto& ids : sequences) examples.push_back({ids, ids});
  std::vector<peft4j::models::ModelInputs> batches = {
      peft4j::train::collate({&examples[0], &examples[1]}, 0, at::kCPU),
      peft4j::train::collate({&examples[2]}, 0, at::kCPU)};
  ASSERT_EQ(batches[0].attention_mask.sum().item<int64_t>(), 10);  // two pads in the second row

  std::vector<peft4j::models::ModelInputs> alone;
  for (const auto& ids : sequences) {
    alone.emplace_back();
    alone.back().input_ids = at::tensor(ids, at::kLong).unsqueeze(0);
    alone.back().labels = alone.back().input_ids.clone();
  }
  std::vector<at::Tensor> fisher = reference_fisher(alone);

  auto config = kConfig;
  config["mask_type"] = "fisher";
  config["k"] = 200;
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("default", config, batches);
  EXPECT_EQ(mask_of(*model, "default"), smallest(fisher, 200));

  // The magnitude mask reads no data: data given with it is refused by name, as for every method that reads none.
  auto magnitude = std::make_shared<PeftModel>(tiny_model("llama"));
  golden_testing::expect_error([&] { magnitude->add_adapter("default", kConfig, batches); }, ErrorKind::InvalidArgument,
                               "mask_type");
  const nlohmann::json ia3 = {{"peft_type", "IA3"}, {"target_modules", {"k_proj"}},
                              {"feedforward_modules", nlohmann::json::array()}};
  golden_testing::expect_error([&] { magnitude->add_adapter("default", ia3, batches); }, ErrorKind::Unsupported,
                               "IA3 adapters are made from no data");
  EXPECT_TRUE(magnitude->adapter_names().empty());
}

}  // namespace
