// PST: the cubic schedule (and the mask's sparsity following it at every step), the mask at t = 0 equal to magnitude
// pruning, the saved sparse weight reproducing the training forward, the straight-through gradients of A, B, R, C
// against finite differences of the surrogate they define, and the count r₁(n + k) + r₂(n + k) + n + k.
#include <gtest/gtest.h>

#include <cmath>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/tuners/pst.h"

namespace {

using namespace adapter_family_testing;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;
using peft4j::tuners::PstLayer;

std::vector<std::pair<std::string, PstLayer*>> pst_layers(PeftModel& model) {
  std::vector<std::pair<std::string, PstLayer*>> out;
  for (const auto& [path, layer] : model.adapter_layers())
    if (auto* p = dynamic_cast<PstLayer*>(layer)) out.emplace_back(path, p);
  return out;
}

// The mask the layer applies now, from its effective weight: entries whose weight the forward keeps.
at::Tensor kept_fraction(PstLayer& layer, const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = layer.base_parameter("weight");
  return layer.mask(adapter, layer.scores(adapter, layer.updated_weight(adapter, w))).to(at::kFloat).mean();
}

TEST(Pst, CubicScheduleAsTheAuthorsWriteIt) {
  // T = 100, warmups 0.1 and 0.3, 0 -> 0.9.
  auto p = [](int64_t t) { return peft4j::tuners::pst_sparsity(t, 100, 0.1, 0.3, 0.0, 0.9); };
  EXPECT_EQ(p(0), 0.0);
  EXPECT_EQ(p(10), 0.0);
  for (int64_t t : {11, 25, 40, 69}) EXPECT_NEAR(p(t), 0.9 + (0.0 - 0.9) * std::pow(1 - (t - 10.0) / 60.0, 3), 1e-12) << t;
  EXPECT_NEAR(p(70), 0.9, 1e-12);
  EXPECT_EQ(p(71), 0.9);
  EXPECT_EQ(p(100), 0.9);
  for (int64_t t = 1; t <= 100; ++t) EXPECT_GE(p(t), p(t - 1)) << t;
}

TEST(Pst, TheMaskFollowsTheScheduleAtEveryStep) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("default", {{"peft_type", "PST"}, {"target_modules", {"q_proj", "up_proj"}}, {"sparsity", 0.75},
                                 {"initial_warmup", 0.2}, {"final_warmup", 0.2}});
  const int64_t total = 10;
  model->before_training(total);
  EXPECT_EQ(model->adapter_config("default")["total_step"], total);
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model->trainable_parameters()) params.push_back(p);
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(1e-2));
  for (int64_t step = 1; step <= total; ++step) {
    const double p = peft4j::tuners::pst_sparsity(step - 1, total, 0.2, 0.2, 0.0, 0.75);
    for (const auto& [path, layer] : pst_layers(*model)) {
      const int64_t numel = layer->base_parameter("weight").numel();
      const double want = static_cast<double>(numel - static_cast<int64_t>(numel * p)) / static_cast<double>(numel);
      EXPECT_NEAR(kept_fraction(*layer, "default").item<double>(), want, 1e-6) << path << " step " << step;
    }
    model->train();
    adamw.zero_grad();
    model->forward(permutation_batch(8, 10, 300 + step)).loss.backward();
    adamw.step();
    model->after_optimizer_step(step);
  }
  for (const auto& [path, layer] : pst_layers(*model)) EXPECT_NEAR(kept_fraction(*layer, "default").item<double>(), 0.25, 1e-3);
}

TEST(Pst, AtStepZeroTheMaskIsMagnitudePruning) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  model->add_adapter("default", {{"peft_type", "PST"}, {"target_modules", {"q_proj", "down_proj"}},
                                 {"initial_sparsity", 0.4}, {"initial_warmup", 0.0}});
  for (const auto& [path, layer] : pst_layers(*model)) {
    at::Tensor w = layer->base_parameter("weight");
    at::Tensor order = std::get<1>(at::sort(w.abs().reshape(-1), /*stable=*/true, 0, /*descending=*/true));
    const int64_t kept = w.numel() - static_cast<int64_t>(w.numel() * 0.4);
    at::Tensor want = at::zeros({w.numel()}, at::kBool).index_fill_(0, order.slice(0, 0, kept), true).view(w.sizes());
    at::Tensor x = at::randn({3, w.size(1)});
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(layer->mask("default", layer->scores("default", layer->updated_weight("default", w))), want)) << path;
    EXPECT_TRUE(at::allclose(layer->forward(x), at::linear(x, w * want), 1e-6, 1e-6)) << path;
  }
}

TEST(Pst, TheSavedSparseWeightReproducesTheTrainingForward) {
  auto model = std::make_shared<PeftModel>(tiny_model("gpt2"));
  model->add_adapter("default", {{"peft_type", "PST"}, {"target_modules", {"c_attn", "c_fc"}}, {"weight_rank", 4},
                                 {"mask_rank", 2}, {"initial_sparsity", 0.5}, {"initial_warmup", 0.0}});
  // Per matrix r₁(n + k) + r₂(n + k) + n + k: c_attn [32, 96], c_fc [32, 64], two layers.
  EXPECT_EQ(model->trainable_parameter_count(), 2 * ((4 + 2) * (32 + 96) + 32 + 96 + (4 + 2) * (32 + 64) + 32 + 64));
  train(*model, 10);
  auto in = permutation_batch(4, 8, 11);
  at::Tensor adapted = golden_testing::logits(*model, in);
  const std::string dir = golden_testing::temp_dir("pst_saved");
  model->save_adapter(dir, "default");
  auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  EXPECT_EQ(saved.size(), 8u);
  const std::string key = "base_model.model.transformer.h.0.attn.c_attn.pst_";
  EXPECT_EQ(saved.at(key + "indices").scalar_type(), at::kInt);
  EXPECT_EQ(saved.at(key + "values").numel(), 32 * 96 / 2);
  auto fresh = std::make_shared<PeftModel>(tiny_model("gpt2"));
  fresh->load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(golden_testing::logits(*fresh, in), adapted));
  model->merge();
  EXPECT_TRUE(at::allclose(golden_testing::logits(*model, in), adapted, 1e-5, 1e-6));
  // The merged weight is the sparse one: half of c_attn's entries are exactly zero.
  at::Tensor w = pst_layers(*model).front().second->base_parameter("weight");
  EXPECT_EQ(w.eq(0).sum().item<int64_t>(), 32 * 96 / 2);
}

// The straight-through gradients on a 4x6 weight, in double precision: autograd's ∂A, ∂B, ∂R, ∂C equal central
// finite differences of the surrogate Σ G ⊙ W′ ⊙ S(A, B, R, C), G the gradient of the loss w.r.t. the effective
// weight, which is what "M counts as 1 for S" means.
TEST(Pst, StraightThroughGradientsMatchFiniteDifferences) {
  auto linear = torch::nn::Linear(torch::nn::LinearOptions(6, 4).bias(false));
  linear->to(at::kDouble);
  auto state = std::make_shared<peft4j::tuners::AdapterState>();
  state->active = {"default"};
  auto layer = std::make_shared<PstLayer>(linear.ptr(), state);
  nlohmann::json config = {{"weight_rank", 2}, {"mask_rank", 3}, {"weight_beta", 0.7}, {"mask_alpha1", 1.3},
                           {"mask_alpha2", 0.9}};
  layer->add("default", config, 0.5, /*stored=*/false);
  auto params = layer->named_parameters(true);
  {
    at::NoGradGuard no_grad;
    for (auto& p : params) p.value().normal_(0, 0.5);  // non-zero V, B, R, C as after some training
  }
  at::Tensor x = at::randn({5, 6}, at::kDouble);
  at::Tensor c = at::randn({5, 4}, at::kDouble);
  layer->train();
  (layer->forward(x) * c).sum().backward();
  at::Tensor g = c.t().mm(x);  // ∂loss/∂W_eff for loss = Σ c ⊙ (x W_effᵀ)
  auto named = [&](const std::string& n) { return params["pst.default." + n]; };
  at::Tensor w = linear->weight.detach();
  auto surrogate = [&]() {
    at::NoGradGuard no_grad;
    at::Tensor updated = layer->updated_weight("default", w);
    return (g * updated * layer->scores("default", updated)).sum().item<double>();
  };
  for (const char* name : {"mask_scores_A", "mask_scores_B", "mask_scores_R", "mask_scores_C"}) {
    at::Tensor p = named(name);
    at::Tensor grad = p.grad().clone();
    at::Tensor flat = p.detach().view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double h = 1e-6, keep = flat[i].item<double>();
      flat[i] = keep + h;
      const double up = surrogate();
      flat[i] = keep - h;
      const double down = surrogate();
      flat[i] = keep;
      EXPECT_NEAR(grad.view(-1)[i].item<double>(), (up - down) / (2 * h), 1e-6) << name << "[" << i << "]";
    }
  }
  // And the low-rank update's gradients only through the kept entries: ∂V = β·Uᵀ·(G ⊙ M).
  at::Tensor m = layer->mask("default", layer->scores("default", layer->updated_weight("default", w))).to(at::kDouble);
  EXPECT_TRUE(at::allclose(named("weight_V").grad(), 0.7 * named("weight_U").detach().t().mm(g * m), 1e-9, 1e-9));
}

TEST(Pst, RefusesBadConfigsByField) {
  auto model = std::make_shared<PeftModel>(tiny_model("llama"));
  auto with = [](nlohmann::json patch) {
    nlohmann::json c = {{"peft_type", "PST"}, {"target_modules", {"q_proj"}}};
    c.update(patch);
    return c;
  };
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"sparsity", 1.0}})); }, ErrorKind::InvalidArgument,
                               "sparsity");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"weight_rank", 0}})); }, ErrorKind::InvalidArgument,
                               "weight_rank");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"initial_warmup", 0.6}, {"final_warmup", 0.5}})); },
                               ErrorKind::InvalidArgument, "final_warmup");
  golden_testing::expect_error([&] { model->add_adapter("a", with({{"total_step", 0}})); }, ErrorKind::InvalidArgument,
                               "total_step");
  EXPECT_TRUE(model->adapter_names().empty());
}

}  // namespace
