// What the weight-changing methods share (parameter_delta.h): the global sparse selection, the base fingerprints
// that refuse another base model by the parameter's name, mixed batches and exact unmerging.
#include <gtest/gtest.h>

#include <algorithm>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/parameter_delta.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

// The reference: a stable sort of all scores (tensor order, then flat index), the first k.
std::vector<std::vector<int64_t>> by_stable_sort(const std::vector<at::Tensor>& scores, int64_t k, bool smallest) {
  std::vector<std::tuple<float, size_t, int64_t>> all;
  for (size_t t = 0; t < scores.size(); ++t) {
    at::Tensor flat = scores[t].reshape(-1).contiguous();
    for (int64_t i = 0; i < flat.numel(); ++i) all.emplace_back(flat[i].item<float>(), t, i);
  }
  std::stable_sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
    return smallest ? std::get<0>(a) < std::get<0>(b) : std::get<0>(a) > std::get<0>(b);
  });
  std::vector<std::vector<int64_t>> out(scores.size());
  for (int64_t i = 0; i < k; ++i) out[std::get<1>(all[i])].push_back(std::get<2>(all[i]));
  for (auto& v : out) std::sort(v.begin(), v.end());
  return out;
}

TEST(ParameterDelta, SelectEntriesEqualsAStableSortWithTies) {
  at::manual_seed(3);
  // Values on a coarse grid so that many scores tie, zeros included.
  std::vector<at::Tensor> scores = {at::randint(0, 6, {7, 5}).to(at::kFloat) / 4, at::randint(0, 6, {13}).to(at::kFloat) / 4,
                                    at::zeros({4, 3})};
  for (bool smallest : {true, false})
    for (int64_t k : {0, 1, 9, 30, 60, 35 + 13 + 12}) {
      auto got = peft4j::tuners::select_entries(scores, k, smallest);
      auto want = by_stable_sort(scores, k, smallest);
      ASSERT_EQ(got.size(), want.size());
      for (size_t t = 0; t < got.size(); ++t) {
        std::vector<int64_t> g(got[t].data_ptr<int64_t>(), got[t].data_ptr<int64_t>() + got[t].numel());
        EXPECT_EQ(g, want[t]) << "k " << k << (smallest ? " smallest" : " largest") << " tensor " << t;
      }
    }
  golden_testing::expect_error([&] { peft4j::tuners::select_entries(scores, 61, true); }, ErrorKind::InvalidArgument,
                               "cannot select 61 of 60");
  golden_testing::expect_error([&] { peft4j::tuners::select_entries({at::full({2}, -1.0)}, 1, true); },
                               ErrorKind::Numerical, "non-negative");
}

TEST(ParameterDelta, FingerprintsAgreeAcrossF32AndBf16AndSeeOneChangedValue) {
  at::manual_seed(5);
  at::Tensor w = at::randn({16, 8}).to(at::kBFloat16).to(at::kFloat);  // values a bf16 checkpoint holds
  const std::string f = peft4j::tuners::parameter_fingerprint(w);
  EXPECT_EQ(f.size(), 16u);
  EXPECT_EQ(peft4j::tuners::parameter_fingerprint(w.to(at::kBFloat16)), f);
  at::Tensor changed = w.clone();
  changed[3][4] += 0.5;
  EXPECT_NE(peft4j::tuners::parameter_fingerprint(changed), f);
  EXPECT_NE(peft4j::tuners::parameter_fingerprint(w.reshape({8, 16})), f);  // the shape counts too
}

// One config per method, on the tiny llama (gpt2 where the method's default targets need biases).
struct MethodCase {
  std::string name;
  std::string family;
  nlohmann::json config;
  std::string parameter;  // a parameter the adapter changes
};

std::vector<MethodCase> method_cases() {
  return {{"pafi", "llama", {{"peft_type", "PAFI"}, {"target_modules", {"q_proj", "v_proj"}}, {"k", 64}},
           "model.layers.1.self_attn.v_proj.weight"},
          {"hiwi", "gpt2", {{"peft_type", "HIWI"}}, "transformer.h.1.mlp.c_proj.bias"},
          {"pst", "llama", {{"peft_type", "PST"}, {"target_modules", {"q_proj", "v_proj"}}},
           "model.layers.1.self_attn.v_proj.weight"},
          {"diff_pruning", "llama", {{"peft_type", "DIFF_PRUNING"}, {"target_modules", {"q_proj", "v_proj"}}},
           "model.layers.1.self_attn.v_proj.weight"},
          {"intrinsic", "llama", {{"peft_type", "INTRINSIC_DIMENSION"}, {"target_modules", {"q_proj", "v_proj"}},
                                  {"intrinsic_dimension", 40}},
           "model.layers.1.self_attn.v_proj.weight"}};
}

class EachMethod : public ::testing::TestWithParam<MethodCase> {};

TEST_P(EachMethod, LoadingRefusesABaseWhoseParameterDiffersByName) {
  const auto& c = GetParam();
  auto model = std::make_shared<PeftModel>(tiny_model(c.family));
  model->add_adapter("default", c.config);
  ASSERT_TRUE(model->adapter_config("default")["base_fingerprints"].contains(c.parameter)) << c.name;
  train(*model, 3);
  const std::string dir = golden_testing::temp_dir("delta_refuse_" + c.name);
  model->save_adapter(dir, "default");

  auto same = std::make_shared<PeftModel>(tiny_model(c.family));
  same->load_adapter(dir, "default");  // the same base: accepted

  auto other_base = tiny_model(c.family);
  {
    at::NoGradGuard no_grad;
    other_base->named_parameters()[c.parameter].view(-1)[0] += 0.25;
  }
  auto other = std::make_shared<PeftModel>(other_base);
  golden_testing::expect_error([&] { other->load_adapter(dir, "default"); }, ErrorKind::InvalidArgument,
                               "parameter '" + c.parameter + "' differs");
  EXPECT_TRUE(other->adapter_names().empty()) << c.name;
}

TEST_P(EachMethod, MixedBatchRowsEqualEachAdapterAloneAndUnmergeRestoresTheBaseExactly) {
  const auto& c = GetParam();
  auto model = std::make_shared<PeftModel>(tiny_model(c.family));
  auto base = golden_testing::base_weights(*model);
  model->add_adapter("a", c.config);
  train(*model, 3);
  model->add_adapter("b", c.config);
  model->set_adapter("b");
  train(*model, 3);
  auto in = permutation_batch(4, 8, 21);
  model->eval();
  model->set_adapter("a");
  at::Tensor a = golden_testing::logits(*model, in);
  model->set_adapter("b");
  at::Tensor b = golden_testing::logits(*model, in);
  model->set_disabled(true);
  at::Tensor plain = golden_testing::logits(*model, in);
  model->set_disabled(false);
  at::Tensor mixed;
  {
    at::NoGradGuard no_grad;
    mixed = model->forward_mixed(in, {"a", "__base__", "b", "a"}).logits;
  }
  EXPECT_TRUE(at::allclose(mixed[0], a[0], 1e-5, 1e-6)) << c.name;
  EXPECT_TRUE(at::allclose(mixed[1], plain[1], 1e-5, 1e-6)) << c.name;
  EXPECT_TRUE(at::allclose(mixed[2], b[2], 1e-5, 1e-6)) << c.name;
  EXPECT_TRUE(at::allclose(mixed[3], a[3], 1e-5, 1e-6)) << c.name;

  model->merge({"b"});
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), b, 1e-4, 1e-5)) << c.name;
  model->unmerge();
  for (const auto& p : model->base_model().named_parameters())
    if (base.count(p.key())) EXPECT_TRUE(at::equal(p.value(), base.at(p.key()))) << c.name << ": " << p.key();
}

INSTANTIATE_TEST_SUITE_P(Methods, EachMethod, ::testing::ValuesIn(method_cases()),
                         [](const ::testing::TestParamInfo<MethodCase>& info) { return info.param.name; });

}  // namespace
