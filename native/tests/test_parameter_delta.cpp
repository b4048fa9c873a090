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

}  // namespace
