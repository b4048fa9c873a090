// FourierFT beyond the parity run: the frequencies are PEFT's randperm (never saved), n_frequency limits and
// patterns, merge on Linear and Conv1D, identity init, refused options.
#include "linear_target_testing.h"
#include "peft4j/tuners/fourierft.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;

nlohmann::json fourierft(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "FOURIERFT"}, {"n_frequency", 32}, {"scaling", 10.0},
                           {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

TEST(FourierFT, FrequenciesArePeftsSeededRandperm) {
  // torch.randperm(out·in, generator=torch.Generator().manual_seed(777))[:6] under torch 2.11, for q_proj (64 × 64)
  // and v_proj (32 × 64).
  auto model = peft("llama");
  model->load_adapter(case_dir("fourierft_llama") + "/adapter", "default");
  for (const auto& [path, first] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"model.layers.0.self_attn.q_proj", {2151, 945, 3161, 4091, 1983, 1566}},
           {"model.layers.1.self_attn.v_proj", {103, 1405, 1251, 2031, 803, 1141}}}) {
    at::Tensor indices = layer_at<peft4j::tuners::FourierFTLayer>(*model, path).indices("default");
    ASSERT_EQ(indices.sizes(), (std::vector<int64_t>{2, 32})) << path;
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(indices[0][i].item<int64_t>(), first[i] / 64) << path << " " << i;
      EXPECT_EQ(indices[1][i].item<int64_t>(), first[i] % 64) << path << " " << i;
    }
  }
}

TEST(FourierFT, SavedAdapterEqualsPeftsFile) { expect_saved_equals_golden("fourierft_llama", "llama"); }

TEST(FourierFT, NFrequencyPatternAndLimit) {
  auto model = peft("llama");
  model->add_adapter("default", fourierft({{"target_modules", {"q_proj", "o_proj"}}, {"n_frequency_pattern", {{"o_proj", 20}}}}));
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.at("base_model.model.model.layers.0.self_attn.o_proj.fourierft_spectrum").size(0), 20);
  EXPECT_EQ(state.at("base_model.model.model.layers.0.self_attn.q_proj.fourierft_spectrum").size(0), 32);
  // v_proj is 32 × 64: at most 2048 frequencies
  expect_error([&] { model->add_adapter("big", fourierft({{"n_frequency", 2049}})); }, ErrorKind::InvalidArgument,
               "'n_frequency'");
  EXPECT_EQ(model->adapter_names(), std::vector<std::string>{"default"});
}

TEST(FourierFT, MergeEqualsUnmergedOnLinearAndConv1D) {
  for (const auto& [arch, targets] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"llama", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "c_fc"}}}) {
    auto model = peft(arch);
    auto before = base_weights(*model);
    model->add_adapter("default", fourierft({{"target_modules", targets}, {"n_frequency", 50}}));
    expect_merge_round_trip(*model, before, batch(arch == "llama" ? "fourierft_llama" : "lora_gpt2"), "fourierft " + arch);
  }
}

TEST(FourierFT, IdentityInitAndTwoAdaptersAndMixedBatchRefused) {
  auto in = batch("fourierft_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("zero", fourierft({{"init_weights", true}}));
  EXPECT_TRUE(at::equal(logits(*model, in), base));
  model->add_adapter("other", fourierft({{"random_loc_seed", 1}}));
  model->set_adapter("other");
  at::Tensor other = logits(*model, in);
  EXPECT_FALSE(at::allclose(other, base));
  expect_mixed_batch_refused(*model, {"zero", "other"}, in, "FOURIERFT");
  model->delete_adapter("zero");
  EXPECT_TRUE(at::equal(logits(*model, in), other));
}

TEST(FourierFT, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", fourierft(extra)); }; };
  expect_error(add({{"n_frequency", 0}}), ErrorKind::InvalidArgument, "'n_frequency'");
  expect_error(add({{"random_loc_seed", nullptr}}), ErrorKind::InvalidArgument, "'random_loc_seed'");
  expect_error(add({{"bias", "fourier_only"}}), ErrorKind::Unsupported, "'bias'");
  expect_error(add({{"n_frequency_pattern", {{"q_proj", -3}}}}), ErrorKind::InvalidArgument, "'n_frequency_pattern'");
  expect_error(add({{"scaling", "high"}}), ErrorKind::InvalidArgument, "'scaling'");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
