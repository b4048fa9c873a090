// LoRA's initialisations (lora_init.h) against what each promises, recomputed with plain tensor ops on the golden
// models; their exact numbers against HF PEFT are the live rows lora_*_{pissa,olora,orthogonal,mica,corda,eva,lora_ga}
// of python-parity/table.py.
#include <gtest/gtest.h>

#include <cmath>

#include "golden_testing.h"
#include "peft4j/files.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_init.h"
#include "peft4j/tuners/peft_model.h"

namespace {

using golden_testing::expect_error;
using golden_testing::PeftModel;
using peft4j::ErrorKind;
using peft4j::tuners::LoraLayer;

nlohmann::json lora(const nlohmann::json& init, const nlohmann::json& targets = {"q_proj", "v_proj", "down_proj"},
                    const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json config = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", targets},
                           {"init_lora_weights", init}};
  config.update(extra);
  return config;
}

peft4j::models::ModelInputs llama_batch() { return golden_testing::batch("lora_llama_all", /*labels=*/true); }
peft4j::models::ModelInputs gpt2_batch() { return golden_testing::batch("lora_gpt2", /*labels=*/true); }

// The golden batch as initialisation data: its two rows, one batch each.
std::vector<peft4j::models::ModelInputs> data_of(const peft4j::models::ModelInputs& batch) {
  std::vector<peft4j::models::ModelInputs> out;
  for (int64_t row = 0; row < batch.input_ids.size(0); ++row) {
    peft4j::models::ModelInputs one;
    one.input_ids = batch.input_ids.slice(0, row, row + 1);
    one.attention_mask = batch.attention_mask.slice(0, row, row + 1);
    one.labels = batch.labels.slice(0, row, row + 1);
    out.push_back(one);
  }
  return out;
}

LoraLayer& layer_at(PeftModel& model, const std::string& path) {
  for (const auto& [p, layer] : model.adapter_layers())
    if (p == path) return dynamic_cast<LoraLayer&>(*layer);
  throw std::runtime_error("no LoRA layer at " + path);
}

at::Tensor stored_weight(LoraLayer& layer) { return layer.base_layer()->named_parameters(false)["weight"].detach(); }

// The layer's map as an [out, in] matrix: residual base weight plus s·B·A.
at::Tensor effective_out_in(LoraLayer& layer) {
  at::Tensor w = stored_weight(layer) + layer.delta_weight("default");
  return layer.fan_in_fan_out() ? w.t() : w;
}

at::Tensor out_in(const at::Tensor& stored, bool fan_in_fan_out) { return fan_in_fan_out ? stored.t() : stored; }

void expect_close(const at::Tensor& got, const at::Tensor& want, double atol, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  double err = (got - want).abs().max().item<double>();
  EXPECT_LE(err, atol) << what << ": max abs error " << err;
}

// A layer's input in the golden llama, recomputed from the embedding and the norm before it (layer 0's attention).
at::Tensor llama_q_proj_input(PeftModel& model, const at::Tensor& input_ids) {
  at::NoGradGuard no_grad;
  auto& base = model.base_model();
  at::Tensor h = base.embed(input_ids);
  auto norm = peft4j::tuners::module_at(base, "model.layers.0.input_layernorm");
  return peft4j::models::forward_module(*norm, h);
}

TEST(LoraInit, InitsThatMoveWeightIntoTheAdapterKeepTheModelAsItWas) {
  struct Case {
    std::string arch;
    nlohmann::json config;
    bool data;
  };
  const nlohmann::json gpt2 = {"c_attn", "c_proj", "c_fc"};
  const nlohmann::json fifo = {{"fan_in_fan_out", true}};
  std::vector<Case> cases = {
      {"llama", lora("pissa"), false},
      {"llama", lora("pissa_niter_3"), false},
      {"llama", lora("olora"), false},
      {"llama", lora("corda"), true},
      {"llama", lora("corda", {"q_proj", "v_proj", "down_proj"}, {{"corda_config", {{"corda_method", "kpm"}}}}), true},
      {"llama", lora("lora_ga", {"q_proj", "v_proj", "down_proj"}, {{"lora_ga_config", nlohmann::json::object()}}), true},
      {"gpt2", lora("pissa", gpt2, fifo), false},
      {"gpt2", lora("corda", gpt2, fifo), true},
      {"gpt2", lora("lora_ga", gpt2, {{"fan_in_fan_out", true}, {"lora_ga_config", {{"direction", "random"}}}}), true},
  };
  for (const auto& c : cases) {
    const std::string what = c.arch + " " + c.config["init_lora_weights"].dump();
    auto model = golden_testing::peft(c.arch);
    auto batch = c.arch == "llama" ? llama_batch() : gpt2_batch();
    at::Tensor before = golden_testing::logits(*model, batch);
    auto original = golden_testing::base_weights(*model);
    at::manual_seed(3);
    if (c.data)
      model->add_adapter("default", c.config, data_of(batch));
    else
      model->add_adapter("default", c.config);
    // W_res + s·B·A is the weight it was, and the adapted model the base model it was.
    int64_t moved = 0;
    for (const auto& [path, layer] : model->adapter_layers()) {
      auto& lora_layer = dynamic_cast<LoraLayer&>(*layer);
      const at::Tensor& w = original.at(path + ".weight");
      expect_close(stored_weight(lora_layer) + lora_layer.delta_weight("default"), w, 2e-5, what + " " + path);
      if (!at::allclose(stored_weight(lora_layer), w)) ++moved;
    }
    EXPECT_EQ(moved, static_cast<int64_t>(model->adapter_layers().size())) << what << ": every base weight is a residual";
    expect_close(golden_testing::logits(*model, batch), before, 1e-4, what + " logits");
    EXPECT_TRUE(peft4j::tuners::init_mutates_base(model->adapter_config("default"))) << what;
  }
}

TEST(LoraInit, PissaTakesThePrincipalSingularTripletsOfTheWeight) {
  for (const std::string arch : {"llama", "gpt2"}) {
    auto model = golden_testing::peft(arch);
    auto original = golden_testing::base_weights(*model);
    const std::string path = arch == "llama" ? "model.layers.1.self_attn.q_proj" : "transformer.h.1.attn.c_attn";
    nlohmann::json config = arch == "llama" ? lora("pissa", {"q_proj"})
                                            : lora("pissa", {"c_attn"}, {{"fan_in_fan_out", true}});
    model->add_adapter("default", config);
    auto& layer = layer_at(*model, path);
    const bool fifo = arch == "gpt2";
    at::Tensor w = out_in(original.at(path + ".weight"), fifo);
    auto [u, s, vh] = at::linalg_svd(w, false);
    at::Tensor principal = at::matmul(u.slice(1, 0, 4) * s.slice(0, 0, 4), vh.slice(0, 0, 4));
    // s·B·A is the rank-4 truncation (whatever signs LAPACK gave), the base keeps the rest.
    expect_close(out_in(layer.delta_weight("default"), fifo), principal, 1e-5, arch + " s·B·A");
    expect_close(out_in(stored_weight(layer), fifo), w - principal, 1e-5, arch + " residual");
    // A = √(S/s)·Vhᵣ and B = Uᵣ·√(S/s): both carry the same singular values.
    at::Tensor a = layer.lora_a("default"), b = layer.lora_b("default");
    expect_close(a.norm(2, {1}), b.norm(2, {0}), 1e-5, arch + " row norms of A = column norms of B");
    expect_close(a.norm(2, {1}).pow(2), s.slice(0, 0, 4) / layer.scaling("default"), 1e-4, arch + " |A_i|² = S_i / s");
  }
}

TEST(LoraInit, SvdLowrankRecoversALowRankMatrixAndItsFactorsAreOrthonormal) {
  at::manual_seed(0);
  at::Tensor low = at::matmul(at::randn({40, 5}), at::randn({5, 70}));  // rank 5
  for (const auto& m : {low, low.t().contiguous()}) {
    auto [u, s, v] = peft4j::tuners::svd_lowrank(m, 5, 2);
    expect_close(at::matmul(u * s, v.t()), m, 1e-3, "U·S·Vᵀ");
    expect_close(at::matmul(u.t(), u), at::eye(5), 1e-5, "UᵀU");
    expect_close(at::matmul(v.t(), v), at::eye(5), 1e-5, "VᵀV");
    expect_close(s, std::get<1>(at::linalg_svd(m, false)).slice(0, 0, 5), 1e-3, "singular values");
  }
}

TEST(LoraInit, OloraTakesTheQrFactorsOfTheWeight) {
  auto model = golden_testing::peft("llama");
  auto original = golden_testing::base_weights(*model);
  model->add_adapter("default", lora("olora", {"up_proj"}));
  const std::string path = "model.layers.0.mlp.up_proj";
  auto& layer = layer_at(*model, path);
  at::Tensor w = original.at(path + ".weight");
  auto [q, r] = at::linalg_qr(w);
  at::Tensor a = layer.lora_a("default"), b = layer.lora_b("default");
  expect_close(b, q.slice(1, 0, 4), 1e-5, "B = Q[:, :r]");
  expect_close(a, r.slice(0, 0, 4), 1e-4, "A = R[:r]");
  expect_close(at::matmul(b.t(), b), at::eye(4), 1e-5, "BᵀB = I");
  expect_close(a.tril(-1), at::zeros_like(a), 0, "A upper triangular");
  expect_close(stored_weight(layer), w - layer.delta_weight("default"), 1e-5, "residual");
}

TEST(LoraInit, OrthogonalFactorsGiveBTimesAZero) {
  auto model = golden_testing::peft("llama");
  auto batch = llama_batch();
  at::Tensor before = golden_testing::logits(*model, batch);
  auto original = golden_testing::base_weights(*model);
  model->add_adapter("default", lora("orthogonal"));
  for (const auto& [path, layer] : model->adapter_layers()) {
    auto& l = dynamic_cast<LoraLayer&>(*layer);
    // B's columns come from the even rows of one orthogonal matrix and A's rows from its odd rows: B·A = 0.
    EXPECT_GT(l.lora_a("default").abs().max().item<double>(), 1e-3) << path;
    EXPECT_GT(l.lora_b("default").abs().max().item<double>(), 1e-3) << path;
    expect_close(l.delta_weight("default"), at::zeros_like(stored_weight(l)), 1e-6, path + " s·B·A");
    expect_close(stored_weight(l), original.at(path + ".weight"), 0, path + " base untouched");
  }
  expect_close(golden_testing::logits(*model, batch), before, 1e-5, "logits");
  EXPECT_FALSE(peft4j::tuners::init_mutates_base(model->adapter_config("default")));
}

TEST(LoraInit, MicaTrainsAOnTheMinorSingularVectorsAndFreezesB) {
  auto model = golden_testing::peft("llama");
  auto original = golden_testing::base_weights(*model);
  nlohmann::json config = lora("mica", {"q_proj", "embed_tokens"});
  model->add_adapter("default", config);
  const std::string path = "model.layers.0.self_attn.q_proj";
  auto& layer = layer_at(*model, path);
  at::Tensor w = original.at(path + ".weight");
  at::Tensor s = std::get<1>(at::linalg_svd(w, false));
  at::Tensor b = layer.lora_b("default");
  expect_close(at::matmul(b.t(), b), at::eye(4), 1e-5, "BᵀB = I");
  // ‖Wᵀ·B‖² is the sum of the four smallest σ² exactly when B spans the minor left singular subspace.
  expect_close(at::matmul(w.t(), b).pow(2).sum(), s.slice(0, s.size(0) - 4, s.size(0)).pow(2).sum(), 1e-4, "‖WᵀB‖²");
  EXPECT_EQ(layer.lora_a("default").abs().max().item<double>(), 0.0);
  expect_close(stored_weight(layer), w, 0, "base untouched");
  auto& embedding = layer_at(*model, "model.embed_tokens");
  at::Tensor eb = embedding.lora_b("default");
  at::Tensor es = std::get<1>(at::linalg_svd(original.at("model.embed_tokens.weight").t(), false));
  expect_close(at::matmul(original.at("model.embed_tokens.weight"), eb).pow(2).sum(),
               es.slice(0, es.size(0) - 4, es.size(0)).pow(2).sum(), 1e-4, "embedding ‖EᵀB‖²");
  // Only A trains; B is saved with the adapter, and loading brings it back.
  int64_t trainable = 0;
  for (const auto& [name, p] : model->trainable_parameters()) {
    EXPECT_EQ(name.find("lora_B"), std::string::npos) << name;
    EXPECT_EQ(name.find("lora_embedding_B"), std::string::npos) << name;
    trainable += p.numel();
  }
  const int64_t layers = 2;
  EXPECT_EQ(trainable, layers * 4 * 64 + 4 * 256);  // q_proj A [4, 64] per layer, embedding A [4, vocab 256]
  {
    at::NoGradGuard no_grad;
    layer.lora_a("default").normal_();
  }
  const std::string dir = golden_testing::temp_dir("mica");
  model->save_adapter(dir, "default");
  auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(saved.count("base_model.model." + path + ".lora_B.weight"));
  EXPECT_TRUE(saved.count("base_model.model.model.embed_tokens.lora_embedding_B"));
  auto batch = llama_batch();
  auto loaded = golden_testing::peft("llama");
  loaded->load_adapter(dir, "default", /*trainable=*/true);
  expect_close(golden_testing::logits(*loaded, batch), golden_testing::logits(*model, batch), 1e-5, "reloaded logits");
  EXPECT_EQ(loaded->trainable_parameter_count(), trainable);
}

// CorDA against its definition on layer 0's q_proj, whose input the test recomputes: C = the mean over sequences of
// XᵀX (X scaled by its largest entry), damped until it inverts, (U, S, Vh) = svd(W·C); IPM's s·B·A = U_r·S_r·Vh_r·C⁻¹.
TEST(LoraInit, CordaDecomposesTheWeightTimesTheInputCovariance) {
  auto model = golden_testing::peft("llama");
  auto batch = llama_batch();
  const std::string path = "model.layers.0.self_attn.q_proj";
  at::Tensor w = golden_testing::base_weights(*model).at(path + ".weight");
  at::Tensor cov;
  for (int64_t row = 0; row < 2; ++row) {
    at::Tensor x = llama_q_proj_input(*model, batch.input_ids.slice(0, row, row + 1)).squeeze(0);
    x = x / x.max().abs();
    at::Tensor c = at::matmul(x.t(), x);
    cov = cov.defined() ? cov + c : c;
  }
  cov = cov / 2;
  double damp = 0.01;
  at::Tensor fixed;
  for (;;) {
    fixed = cov + at::eye(64) * (cov.diag().mean() * damp);
    if (at::dist(at::matmul(fixed, at::inverse(fixed)), at::eye(64)).item<double>() < 0.05) break;
    damp *= 2;
  }
  auto [u, s, vh] = at::linalg_svd(at::matmul(w, fixed), false);
  for (const std::string method : {"ipm", "kpm"}) {
    auto fresh = golden_testing::peft("llama");
    fresh->add_adapter("default", lora("corda", {"q_proj"}, {{"corda_config", {{"corda_method", method}}}}),
                       data_of(batch));
    const int64_t from = method == "ipm" ? 0 : s.size(0) - 4;
    at::Tensor expected = at::matmul(at::matmul(u.slice(1, from, from + 4) * s.slice(0, from, from + 4),
                                                vh.slice(0, from, from + 4)),
                                     at::inverse(fixed));
    expect_close(layer_at(*fresh, path).delta_weight("default"), expected, 2e-4 * expected.abs().max().item<double>(),
                 method + " s·B·A");
  }
}

TEST(LoraInit, EvaPutsThePrincipalDirectionsOfTheLayerInputsIntoA) {
  auto model = golden_testing::peft("llama");
  auto batch = llama_batch();
  at::Tensor before = golden_testing::logits(*model, batch);
  std::vector<peft4j::models::ModelInputs> data = {batch};
  model->add_adapter("default", lora("eva", {"q_proj", "k_proj", "v_proj", "o_proj"}), data);
  const nlohmann::json& config = model->adapter_config("default");
  // The rank budget (4 per layer, 8 layers) is redistributed; the config records it as PEFT saves it.
  int64_t total = 0;
  for (const auto& t : config["target_modules"]) {
    const std::string key = t.get<std::string>();
    int64_t rank = config["rank_pattern"].contains(key) ? config["rank_pattern"][key].get<int64_t>() : 4;
    double alpha = config["alpha_pattern"].contains(key) ? config["alpha_pattern"][key].get<double>() : 8.0;
    EXPECT_DOUBLE_EQ(alpha, 8.0 * rank / 4) << key << ": alpha scaled by new rank / r";
    auto& layer = layer_at(*model, key);
    EXPECT_EQ(layer.rank("default"), rank) << key;
    at::Tensor a = layer.lora_a("default");
    expect_close(at::matmul(a, a.t()), at::eye(rank), 1e-4, key + " AAᵀ = I");
    EXPECT_EQ(layer.lora_b("default").abs().max().item<double>(), 0.0) << key;
    total += rank;
  }
  EXPECT_EQ(total, 8 * 4);
  for (const auto& [path, layer] : model->adapter_layers())
    EXPECT_TRUE(std::count(config["target_modules"].begin(), config["target_modules"].end(), path)) << path;
  expect_close(golden_testing::logits(*model, batch), before, 1e-5, "logits (B = 0)");
  // q_proj of layer 0: the first component is the top principal direction of its (centred) inputs.
  const std::string q = "model.layers.0.self_attn.q_proj";
  if (layer_at(*model, q).rank("default") > 0) {
    at::Tensor x = llama_q_proj_input(*model, batch.input_ids).reshape({-1, 64}).to(at::kDouble);
    x = x - x.mean(0);
    at::Tensor top = std::get<2>(at::linalg_svd(x, false))[0];
    double cosine = at::dot(layer_at(*model, q).lora_a("default")[0].to(at::kDouble), top).abs().item<double>();
    EXPECT_GT(cosine, 0.99) << "first EVA component against the inputs' top principal direction";
  }
}

// LoRA-GA against the mean gradient of the loss over the data, recomputed with a plain backward pass: A's rows are
// the gradient's top right singular vectors (direction ArB2r, A takes the first r).
TEST(LoraInit, LoraGaAlignsAWithTheGradientsTopSingularVectors) {
  auto model = golden_testing::peft("llama");
  auto batch = llama_batch();
  const std::string path = "model.layers.1.mlp.down_proj";
  auto data = data_of(batch);
  at::Tensor grad;
  {
    auto& base = model->base_model();
    at::Tensor w = peft4j::tuners::module_at(base, path)->named_parameters(false)["weight"];
    w.set_requires_grad(true);
    base.train();
    for (const auto& b : data) base.forward(b).loss.backward();
    grad = w.grad().detach().clone() / 2;
    w.mutable_grad() = at::Tensor();
    w.set_requires_grad(false);
    base.eval();
  }
  model->add_adapter("default", lora("lora_ga", {"down_proj"}, {{"lora_ga_config", nlohmann::json::object()}}), data);
  at::Tensor vh = std::get<2>(at::linalg_svd(grad, false));
  at::Tensor a = layer_at(*model, path).lora_a("default");
  for (int64_t i = 0; i < 2; ++i) {
    double cosine = at::dot(a[i], vh[i]).abs().item<double>() / a[i].norm().item<double>();
    EXPECT_GT(cosine, 0.999) << "A row " << i;
  }
}

// PEFT's save_pretrained(path_initial_model_for_weight_conversion=...): after training, the converted adapter on the
// untouched base model is the trained model.
TEST(LoraInit, ConvertedAdapterAppliesToTheUntouchedBaseModel) {
  auto model = golden_testing::peft("llama");
  auto batch = llama_batch();
  model->add_adapter("default", lora("pissa", {"q_proj", "v_proj", "down_proj"}, {{"lora_alpha", 16}}));
  const std::string initial = golden_testing::temp_dir("pissa_initial");
  model->save_adapter(initial, "default");
  {
    std::vector<at::Tensor> params;
    for (auto& [name, p] : model->trainable_parameters()) params.push_back(p);
    model->train();
    for (int step = 0; step < 3; ++step) {
      at::Tensor loss = model->forward(batch).loss;
      loss.backward();
      at::NoGradGuard no_grad;
      for (auto& p : params) {
        p.sub_(p.grad() * 0.05);
        p.mutable_grad() = at::Tensor();
      }
    }
  }
  at::Tensor trained = golden_testing::logits(*model, batch);
  const std::string converted = golden_testing::temp_dir("pissa_converted");
  peft4j::tuners::save_converted_adapter(*model, converted, "default", initial);
  auto config = peft4j::io::read_json_file(converted + "/adapter_config.json");
  EXPECT_EQ(config["r"], 8);
  EXPECT_EQ(config["lora_alpha"], 32);
  EXPECT_EQ(config["init_lora_weights"], true);
  EXPECT_EQ(peft4j::io::read_json_file(initial + "/adapter_config.json")["init_lora_weights"], true);
  auto tensors = peft4j::io::read_safetensors(converted + "/adapter_model.safetensors");
  EXPECT_EQ(tensors.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").sizes(), at::IntArrayRef({8, 64}));
  EXPECT_EQ(tensors.at("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").sizes(), at::IntArrayRef({64, 8}));
  auto untouched = golden_testing::peft("llama");
  at::Tensor base_logits = golden_testing::logits(*untouched, batch);
  untouched->load_adapter(converted, "default");
  expect_close(golden_testing::logits(*untouched, batch), trained, 1e-4, "converted adapter on the untouched base");
  EXPECT_GT((trained - base_logits).abs().max().item<double>(), 1e-3) << "training changed the model";

  // A PiSSA adapter saved as it is loads as PEFT loads it: the base is decomposed again, then the weights replace A
  // and B, which gives the trained model back.
  const std::string plain = golden_testing::temp_dir("pissa_plain");
  model->save_adapter(plain, "default");
  auto again = golden_testing::peft("llama");
  again->load_adapter(plain, "default");
  expect_close(golden_testing::logits(*again, batch), trained, 1e-4, "PiSSA adapter loaded onto the original base");

  auto rslora = golden_testing::peft("llama");
  rslora->add_adapter("default", lora("pissa", {"q_proj"}, {{"use_rslora", true}, {"rank_pattern", {{"q_proj", 2}}}}));
  expect_error([&] { peft4j::tuners::save_converted_adapter(*rslora, converted, "default", initial); },
               ErrorKind::InvalidArgument, "use_rslora");
  expect_error([&] { peft4j::tuners::save_converted_adapter(*model, converted, "default", converted + "/none"); },
               ErrorKind::NotFound, "path_initial_model_for_weight_conversion");
}

// An init that changes the base weights leaves them as they were when the adapter cannot be added or loaded.
TEST(LoraInit, AFailedAddOrLoadPutsTheBaseWeightsBack) {
  auto model = golden_testing::peft("llama");
  auto original = golden_testing::base_weights(*model);
  auto expect_untouched = [&](const std::string& what) {
    for (const auto& [key, w] : golden_testing::base_weights(*model))
      expect_close(w, original.at(key), 0, what + " " + key);
  };
  // q_proj (64×64) is decomposed before k_proj (32×64) refuses rank 40.
  expect_error([&] { model->add_adapter("default", lora("pissa", {"q_proj", "k_proj"}, {{"r", 40}})); },
               ErrorKind::InvalidArgument, "'r'");
  EXPECT_TRUE(model->adapter_names().empty());
  expect_untouched("after a failed add");

  auto source = golden_testing::peft("llama");
  source->add_adapter("default", lora("pissa", {"q_proj", "v_proj"}));
  const std::string dir = golden_testing::temp_dir("pissa_truncated");
  source->save_adapter(dir, "default");
  auto tensors = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  tensors.erase("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  peft4j::io::write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  expect_error([&] { model->load_adapter(dir, "default"); }, ErrorKind::Format, "missing key");
  EXPECT_TRUE(model->adapter_names().empty());
  expect_untouched("after a failed load");
}

TEST(LoraInit, DataDrivenInitsWithoutDataDoWhatPeftsGetPeftModelDoes) {
  auto batch = llama_batch();
  {
    auto model = golden_testing::peft("llama");
    expect_error([&] { model->add_adapter("default", lora("corda")); }, ErrorKind::InvalidArgument,
                 "initialises from data");
    EXPECT_TRUE(model->adapter_names().empty());
  }
  for (const std::string init : {"eva", "lora_ga"}) {
    auto model = golden_testing::peft("llama");
    at::Tensor before = golden_testing::logits(*model, batch);
    nlohmann::json config = lora(init, {"q_proj"}, {{"lora_ga_config", nlohmann::json::object()}});
    model->add_adapter("default", config);
    // B = 0 and the base untouched, as before PEFT's initialize_lora_eva_weights / without preprocess_loraga.
    expect_close(golden_testing::logits(*model, batch), before, 0, init + " logits");
    EXPECT_EQ(layer_at(*model, "model.layers.0.self_attn.q_proj").lora_b("default").abs().max().item<double>(), 0.0);
  }
  auto model = golden_testing::peft("llama");
  expect_error([&] { model->add_adapter("default", lora("pissa"), data_of(batch)); }, ErrorKind::InvalidArgument,
               "takes none");
  expect_error([&] { model->add_adapter("default", lora("lora_ga"), data_of(batch)); }, ErrorKind::InvalidArgument,
               "lora_ga_config");
  EXPECT_TRUE(model->adapter_names().empty());
}

TEST(LoraInit, BadInitConfigsAreRefusedByName) {
  auto model = golden_testing::peft("llama");
  auto gpt2 = golden_testing::peft("gpt2");
  struct Bad {
    nlohmann::json config;
    ErrorKind kind;
    std::string text;
  };
  std::vector<Bad> bad = {
      {lora("loftq"), ErrorKind::Unsupported, "loftq"},
      {lora(true, {"q_proj"}, {{"loftq_config", {{"loftq_bits", 4}}}}), ErrorKind::Unsupported, "loftq_config"},
      {lora("pissa_niter_x"), ErrorKind::InvalidArgument, "pissa_niter_x"},
      {lora("OLoRA"), ErrorKind::InvalidArgument, "init_lora_weights"},
      {lora(3), ErrorKind::InvalidArgument, "init_lora_weights"},
      {lora("eva", {"q_proj"}, {{"eva_config", {{"rho", 0.5}}}}), ErrorKind::InvalidArgument, "eva_config.rho"},
      {lora("eva", {"q_proj"}, {{"eva_config", {{"tau", 1.5}}}}), ErrorKind::InvalidArgument, "eva_config.tau"},
      {lora("eva", {"q_proj"}, {{"eva_config", {{"n_iter", 5}}}}), ErrorKind::InvalidArgument, "eva_config.n_iter"},
      {lora("corda", {"q_proj"}, {{"corda_config", {{"corda_method", "xyz"}}}}), ErrorKind::InvalidArgument,
       "corda_config.corda_method"},
      {lora("corda", {"q_proj"}, {{"corda_config", {{"cache_file", "/tmp/c.pt"}}}}), ErrorKind::Unsupported,
       "corda_config.cache_file"},
      {lora("lora_ga", {"q_proj"}, {{"lora_ga_config", {{"direction", "BA"}}}}), ErrorKind::InvalidArgument,
       "lora_ga_config.direction"},
      {lora("lora_ga", {"q_proj"}, {{"lora_ga_config", {{"stable_gamma", 0}}}}), ErrorKind::InvalidArgument,
       "lora_ga_config.stable_gamma"},
      {lora("pissa", {"q_proj"}, {{"lora_bias", true}}), ErrorKind::InvalidArgument, "lora_bias"},
      {lora("orthogonal", {"q_proj"}, {{"r", 3}}), ErrorKind::InvalidArgument, "even"},
      {lora("pissa", {"k_proj"}, {{"r", 40}}), ErrorKind::InvalidArgument, "'r'"},
      {lora("mica", {"q_proj"}, {{"use_dora", true}}), ErrorKind::InvalidArgument, "mica"},
  };
  for (const auto& b : bad) {
    expect_error([&] { model->add_adapter("default", b.config); }, b.kind, b.text);
    EXPECT_TRUE(model->adapter_names().empty()) << b.config.dump();
  }
  expect_error([&] { gpt2->add_adapter("default", lora("olora", {"c_attn"}, {{"fan_in_fan_out", true}})); },
               ErrorKind::Unsupported, "Conv1D");
  // An unused sub-config is kept and ignored (PEFT warns), a missing one filled as PEFT fills it.
  model->add_adapter("default", lora("eva", {"q_proj"}));
  EXPECT_DOUBLE_EQ(model->adapter_config("default")["eva_config"]["rho"].get<double>(), 2.0);
  EXPECT_EQ(model->adapter_config("default")["eva_config"]["label_mask_value"], -100);
}

}  // namespace
