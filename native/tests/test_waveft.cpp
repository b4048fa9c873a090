// WaveFT beyond the parity run: the inverse DWT against PEFT's waverec2d (the Haar closed form, and PEFT's outputs
// for db2, coif1, sym3), ΔW recomputed from the saved coefficients at the seeded positions, use_idwt false, the
// proportional budget, n_frequency_pattern, Conv1D, merge, identity init, refusals.
#include <ATen/CPUGeneratorImpl.h>

#include "linear_target_testing.h"
#include "peft4j/tuners/waveft.h"
#include "peft4j/tuners/wavelet.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
namespace wavelet = peft4j::tuners::wavelet;

nlohmann::json waveft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "WAVEFT"}, {"n_frequency", 32}, {"target_modules", {"q_proj", "v_proj"}},
                           {"init_weights", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

// sin(i + 2j + band) on 3 × 3, the bands PEFT's waverec2d was run on for the expected values below.
std::vector<at::Tensor> test_bands() {
  at::Tensor i = at::arange(3, at::kFloat).reshape({3, 1}), j = at::arange(3, at::kFloat).reshape({1, 3});
  std::vector<at::Tensor> bands;
  for (int b = 0; b < 4; ++b) bands.push_back(at::sin(i + 2 * j + b));
  return bands;
}

TEST(WaveFT, InverseDwtIsPeftsWaverec2d) {
  auto b = test_bands();
  // Haar: each 2 × 2 output block is ½·(a ± h ± v ± d), h changing sign down the rows, v along the columns
  at::Tensor haar = wavelet::waverec2d(b[0], b[1], b[2], b[3], "db1");
  ASSERT_EQ(haar.sizes(), (std::vector<int64_t>{6, 6}));
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 6; ++c) {
      const double sr = r % 2 ? -1 : 1, sc = c % 2 ? -1 : 1;
      auto at = [&](int k) { return b[k][r / 2][c / 2].item<double>(); };
      EXPECT_NEAR(haar[r][c].item<double>(), 0.5 * (at(0) + sr * at(1) + sc * at(2) + sr * sc * at(3)), 1e-6);
    }
  // PEFT 0.21's waverec2d((a, (h, v, d)), family) on the same bands
  const std::map<std::string, std::vector<float>> peft = {
      {"db2", {1.047352, 0.3575846, -1.8237641, -0.7092508, 0.1784901, 0.063888, -0.2186907, -0.0867407, -0.7184978,
               -0.3254345, -1.25227, -0.4409851, -0.037202, -0.021148, -0.1991161, -0.0725844}},
      {"coif1", {-0.6222894, 0.6150388, 0.375145, 0.2789587}},
      {"sym3", {-0.4072112, -0.2365855, -0.3963949, 0.31216}}};
  for (const auto& [family, want] : peft) {
    at::Tensor got = wavelet::waverec2d(b[0], b[1], b[2], b[3], family).flatten();
    EXPECT_TRUE(at::allclose(got, at::tensor(want), 1e-5, 1e-6)) << family << ": " << got;
  }
  EXPECT_EQ(wavelet::filter_length("coif4"), 24);
  EXPECT_FALSE(wavelet::filter_length("coif5"));  // PEFT's entry is malformed: its forward fails
  EXPECT_FALSE(wavelet::filter_length("db11"));
}

TEST(WaveFT, SavesPeftsKeysAndDeltaIsTheInverseDwtOfTheSeededCoefficients) {
  auto model = peft("llama");
  model->add_adapter("default", waveft({{"scaling", 3.0}}));
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.size(), 4u);
  const std::string key = "base_model.model.model.layers.0.self_attn.v_proj.waveft_spectrum";
  ASSERT_TRUE(state.count(key));
  EXPECT_EQ(state.at(key).sizes(), (std::vector<int64_t>{32}));
  EXPECT_EQ(model->trainable_parameter_count(), 128);
  auto& layer = layer_at<peft4j::tuners::WaveFTLayer>(*model, "model.layers.0.self_attn.v_proj");  // 64 -> 32
  // positions: randperm(32·64) from a generator seeded 777 (random_loc_seed's default), first 32, row-major
  auto generator = at::make_generator<at::CPUGeneratorImpl>(777);
  at::Tensor flat = at::randperm(32 * 64, generator, at::kLong).slice(0, 0, 32);
  EXPECT_TRUE(at::equal(layer.indices("default"), at::stack({flat.div(64, "floor"), flat.remainder(64)})));
  // db1: no padding; the four 16 × 32 quadrants are the sub-bands
  at::Tensor dense = at::zeros({32 * 64}, at::kFloat);
  dense.index_put_({flat}, state.at(key));
  dense = dense.reshape({32, 64});
  at::Tensor a = dense.slice(0, 0, 16).slice(1, 0, 32), h = dense.slice(0, 0, 16).slice(1, 32);
  at::Tensor v = dense.slice(0, 16).slice(1, 0, 32), d = dense.slice(0, 16).slice(1, 32);
  at::Tensor expected = at::empty({32, 64});
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) {
      const double sr = r ? -1 : 1, sc = c ? -1 : 1;
      expected.slice(0, r, 32, 2).slice(1, c, 64, 2).copy_(0.5 * (a + sr * h + sc * v + sr * sc * d));
    }
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.delta_out_in("default"), expected * 3.0, 1e-5, 1e-7));
  at::Tensor x = at::randn({2, 64});
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::linear(x, expected * 3.0), 1e-5, 1e-6));
}

TEST(WaveFT, WithoutIdwtTheCoefficientsAreTheDelta) {
  auto model = peft("llama");
  model->add_adapter("default", waveft({{"use_idwt", false}, {"wavelet_family", "db20"}, {"scaling", 2.0}}));
  auto& layer = layer_at<peft4j::tuners::WaveFTLayer>(*model, "model.layers.1.self_attn.q_proj");
  at::Tensor spectrum = model->adapter_state_dict("default").at("base_model.model.model.layers.1.self_attn.q_proj.waveft_spectrum");
  at::Tensor expected = at::zeros({64, 64});
  expected.index_put_({layer.indices("default")[0], layer.indices("default")[1]}, spectrum * 2.0);
  EXPECT_TRUE(at::allclose(layer.delta_out_in("default"), expected));
}

TEST(WaveFT, ProportionalBudgetAndPattern) {
  // budget 30 × 4 targets shared by in·out: q_proj 4096 of 12288 -> 40, v_proj 2048 -> 20 (PEFT's round())
  auto model = peft("llama");
  model->add_adapter("default", waveft({{"n_frequency", 30}, {"proportional_parameters", true}}));
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.at("base_model.model.model.layers.1.self_attn.q_proj.waveft_spectrum").numel(), 40);
  EXPECT_EQ(state.at("base_model.model.model.layers.1.self_attn.v_proj.waveft_spectrum").numel(), 20);
  model->add_adapter("pattern", waveft({{"n_frequency_pattern", {{"v_proj", 7}}}}));
  auto patterned = model->adapter_state_dict("pattern");
  EXPECT_EQ(patterned.at("base_model.model.model.layers.0.self_attn.q_proj.waveft_spectrum").numel(), 32);
  EXPECT_EQ(patterned.at("base_model.model.model.layers.0.self_attn.v_proj.waveft_spectrum").numel(), 7);
}

TEST(WaveFT, Conv1DMergeIdentityInitAndMixedBatchRefused) {
  auto in = batch("lora_gpt2");
  auto model = peft("gpt2");
  auto before = base_weights(*model);
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", waveft({{"init_weights", true}, {"target_modules", {"c_attn"}}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->delete_adapter("zero");
  model->add_adapter("default", waveft({{"target_modules", {"c_attn", "c_proj"}}, {"wavelet_family", "sym2"},
                                        {"fan_in_fan_out", true}}));
  auto& layer = layer_at<peft4j::tuners::WaveFTLayer>(*model, "transformer.h.0.attn.c_attn");  // Conv1D 64 -> 192
  EXPECT_EQ(layer.delta_weight("default").sizes(), (std::vector<int64_t>{64, 192}));
  EXPECT_TRUE(at::equal(layer.delta_weight("default"), layer.delta_out_in("default").t()));
  expect_merge_round_trip(*model, before, in, "waveft");
  expect_mixed_batch_refused(*model, {"default", "__base__"}, in, "WAVEFT");
}

TEST(WaveFT, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", waveft(extra)); }; };
  expect_error(add({{"n_frequency", 0}}), ErrorKind::InvalidArgument, "'n_frequency'");
  expect_error(add({{"n_frequency", 2049}}), ErrorKind::InvalidArgument, "'n_frequency'");  // v_proj has 2048 entries
  expect_error(add({{"wavelet_family", "haar"}}), ErrorKind::InvalidArgument, "'wavelet_family'");
  expect_error(add({{"wavelet_family", "db11"}}), ErrorKind::InvalidArgument, "'wavelet_family'");  // no filter in PEFT
  expect_error(add({{"wavelet_family", "coif5"}}), ErrorKind::InvalidArgument, "'wavelet_family'");
  expect_error(add({{"bias", "waveft_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"target_modules", ".*q_proj"}, {"layers_to_transform", {0}}}), ErrorKind::InvalidArgument,
               "'layers_to_transform'");
  expect_error(add({{"n_frequency_pattern", {{"q_proj", "many"}}}}), ErrorKind::InvalidArgument, "'n_frequency_pattern'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
