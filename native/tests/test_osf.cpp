// OSF beyond the parity run: the split SVD (frozen top directions, trained rest), ΔW and the factored forward recomputed
// from the factors, the gradient projection against the plain gradient, effective_rank and rank_pattern resolution,
// only the first active adapter acting, merge, identity init, PEFT's keys, refusals.
#include "linear_target_testing.h"
#include "peft4j/tuners/osf.h"

namespace {

using namespace linear_target_testing;
using peft4j::ErrorKind;
using peft4j::tuners::OSFLayer;

nlohmann::json osf(nlohmann::json extra) {
  nlohmann::json config = {{"peft_type", "OSF"}, {"target_modules", {"q_proj", "v_proj"}}};
  for (auto it = extra.begin(); it != extra.end(); ++it) config[it.key()] = it.value();
  return config;
}

at::Tensor product(const at::Tensor& u, const at::Tensor& s, const at::Tensor& v) { return at::mm(u * s, v); }

TEST(OSF, SavesPeftsKeysAndCountAndStartsAsTheIdentity) {
  // PEFT 0.21 on this llama with OSFConfig(target_modules=["v_proj", "q_proj"]): effective_rank = min(out, in) / 2
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  at::Tensor base = logits(*model, in);
  model->add_adapter("default", osf({}));
  EXPECT_TRUE(at::allclose(logits(*model, in), base, 1e-5, 1e-6));
  EXPECT_EQ(model->trainable_parameter_count(), 11360);
  auto state = model->adapter_state_dict("default");
  EXPECT_EQ(state.size(), 12u);  // only the trained factors: PEFT's frozen ones are non-persistent buffers
  const std::string p = "base_model.model.model.layers.0.self_attn.v_proj.osf_svd_params.";
  EXPECT_EQ(state.at(p + "U_low").sizes(), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(state.at(p + "S_low").sizes(), (std::vector<int64_t>{16}));
  EXPECT_EQ(state.at(p + "V_low").sizes(), (std::vector<int64_t>{16, 64}));
  // the frozen top directions and the trained rest make up W
  auto& layer = layer_at<OSFLayer>(*model, "model.layers.0.self_attn.v_proj");
  at::Tensor w = peft4j::tuners::linear_weight(*layer.base_layer());
  auto [u, s, vh] = at::linalg_svd(w, false);
  at::Tensor high = product(u.slice(1, 0, 16), s.slice(0, 0, 16), vh.slice(0, 0, 16));
  EXPECT_TRUE(at::allclose(high + product(layer.factor("default", "U_low"), layer.factor("default", "S_low"),
                                          layer.factor("default", "V_low")), w, 1e-5, 1e-6));
}

TEST(OSF, ForwardAndDeltaAreTheFactorsLessTheirInitialProduct) {
  auto model = peft("llama");
  model->add_adapter("default", osf({{"init_weights", false}, {"effective_rank", 8}}));
  auto& layer = layer_at<OSFLayer>(*model, "model.layers.1.self_attn.q_proj");
  auto f = [&](const char* name) { return layer.factor("default", name); };
  EXPECT_EQ(f("U_low").sizes(), (std::vector<int64_t>{64, 56}));
  at::Tensor delta = product(f("U_low"), f("S_low"), f("V_low")) - product(f("U_low_init"), f("S_low_init"), f("V_low_init"));
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(layer.delta_weight("default"), delta, 1e-5, 1e-5));
  at::Tensor x = at::randn({2, 3, 64});
  EXPECT_TRUE(at::allclose(layer.forward(x), layer.base_forward(x) + at::matmul(x, delta.t()), 1e-4, 1e-4));
}

TEST(OSF, GradientsAreProjectedAwayFromTheFrozenSubspace) {
  auto model = peft("llama");
  model->add_adapter("default", osf({{"init_weights", false}, {"effective_rank", 8}}));
  // v_proj is 32 × 64: U is square (its complement is span(U_low_init)), V is not (V_high is kept)
  auto& layer = layer_at<OSFLayer>(*model, "model.layers.0.self_attn.v_proj");
  auto f = [&](const char* name) { return layer.factor("default", name); };
  at::Tensor x = at::randn({5, 64}), target = at::randn({5, 32});
  model->train();
  at::Tensor loss = (layer.forward(x) - target).pow(2).sum();
  loss.backward();
  // the plain gradient, from leaf copies without hooks
  at::Tensor u = f("U_low").detach().clone().requires_grad_(), s = f("S_low").detach().clone().requires_grad_();
  at::Tensor v = f("V_low").detach().clone().requires_grad_();
  at::Tensor w = peft4j::tuners::linear_weight(*layer.base_layer());
  at::Tensor plain_delta = product(u, s, v) - product(f("U_low_init"), f("S_low_init"), f("V_low_init"));
  (at::linear(x, w + plain_delta) - target).pow(2).sum().backward();
  at::Tensor u0 = f("U_low_init"), vh = f("V_high");
  EXPECT_EQ(vh.sizes(), (std::vector<int64_t>{8, 64}));
  // (random factors make gradients of ~1e4: compared relative to their largest entry)
  auto relative = [](const at::Tensor& got, const at::Tensor& want) {
    return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
  };
  EXPECT_LT(relative(f("U_low").grad(), at::mm(u0, at::mm(u0.t(), u.grad()))), 1e-5);
  EXPECT_LT(relative(f("V_low").grad(), v.grad() - at::mm(at::mm(v.grad(), vh.t()), vh)), 1e-5);
  EXPECT_LT(relative(f("S_low").grad(), s.grad()), 1e-5);
  EXPECT_GT(relative(f("V_low").grad(), v.grad()), 1e-2);  // the projection changed it
  EXPECT_LT(at::mm(f("V_low").grad(), vh.t()).abs().max().item<double>() / v.grad().abs().max().item<double>(), 1e-5);
}

TEST(OSF, RankResolutionAndPatterns) {
  auto model = peft("llama");
  // a fraction of min(out, in); an integer; a pattern (regex searched in the module path) overriding it
  model->add_adapter("frac", osf({{"effective_rank", 0.25}, {"target_modules", {"v_proj"}}}));
  EXPECT_EQ(layer_at<OSFLayer>(*model, "model.layers.0.self_attn.v_proj").factor("frac", "S_low").numel(), 32 - 8);
  model->add_adapter("pattern", osf({{"effective_rank", 10}, {"rank_pattern", {{"layers\\.1\\..*q_", 60}}}}));
  EXPECT_EQ(layer_at<OSFLayer>(*model, "model.layers.0.self_attn.q_proj").factor("pattern", "S_low").numel(), 64 - 10);
  EXPECT_EQ(layer_at<OSFLayer>(*model, "model.layers.1.self_attn.q_proj").factor("pattern", "S_low").numel(), 64 - 60);
  model->add_adapter("clamped", osf({{"effective_rank", 1000}, {"target_modules", {"v_proj"}}}));
  EXPECT_EQ(layer_at<OSFLayer>(*model, "model.layers.0.self_attn.v_proj").factor("clamped", "S_low").numel(), 0);
}

TEST(OSF, OnlyTheFirstActiveAdapterActsAndMergeRoundTrip) {
  auto in = batch("c3a_llama");
  auto model = peft("llama");
  auto before = base_weights(*model);
  model->add_adapter("a", osf({{"effective_rank", 30}}));
  model->add_adapter("b", osf({{"effective_rank", 20}}));
  {
    // factors moved off the SVD by a little (random factors would make ΔW 1e3 times W, beyond the round trip's f32)
    at::NoGradGuard no_grad;
    for (const auto& [path, layer] : model->adapter_layers())
      for (const char* adapter : {"a", "b"})
        for (const char* name : {"U_low", "S_low", "V_low"}) {
          at::Tensor t = dynamic_cast<OSFLayer*>(layer)->factor(adapter, name);
          t.add_(at::randn_like(t) * 0.05);
        }
  }
  model->set_adapter("b");
  at::Tensor b_alone = logits(*model, in);
  model->set_active_adapters({"b", "a"});
  EXPECT_TRUE(at::equal(logits(*model, in), b_alone));
  model->set_adapter("a");
  expect_merge_round_trip(*model, before, in, "osf");
  expect_mixed_batch_refused(*model, {"a", "__base__"}, in, "OSF");
}

TEST(OSF, RefusesBadOptionsNamingTheField) {
  auto model = peft("llama");
  auto add = [&](nlohmann::json extra) { return [&model, extra] { model->add_adapter("x", osf(extra)); }; };
  expect_error(add({{"effective_rank", 0.01}}), ErrorKind::InvalidArgument, "'effective_rank'");  // 32 · 0.01 -> 0
  expect_error(add({{"effective_rank", "half"}}), ErrorKind::InvalidArgument, "'effective_rank'");
  expect_error(add({{"rank_pattern", {{"q_proj", "x"}}}}), ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error(add({{"rank_pattern", {{"(q_proj", 4}}}}), ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error(add({{"rank_pattern", {{"q_proj", 4}, {"self_attn", 8}}}}), ErrorKind::InvalidArgument, "'rank_pattern'");
  expect_error(add({{"init_weights", "svd"}}), ErrorKind::InvalidArgument, "'init_weights'");
  EXPECT_TRUE(model->adapter_names().empty());
  auto gpt2 = peft("gpt2");  // Conv1D is not an OSF target (PEFT takes nn.Linear only)
  expect_error([&] { gpt2->add_adapter("x", osf({{"target_modules", {"c_attn"}}})); }, ErrorKind::Unsupported, "c_attn");
}

}  // namespace
