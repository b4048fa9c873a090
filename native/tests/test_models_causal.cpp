// Causal LM families (llama, qwen2, mistral, gpt2) and generation: parity with transformers' golden outputs,
// and properties that hold by construction (KV cache = recomputation, padding, prefixes, sliding windows).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/model_dir.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/models/generation.h"
#include "peft4j/models/gpt2.h"
#include "peft4j/models/llama.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"

namespace {

using namespace peft4j::models;
using nlohmann::json;

const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

std::string model_dir(const std::string& arch) { return kGolden + "/models/" + arch; }

struct GoldenCase {
  std::string name;
  json tolerance;
  peft4j::io::TensorMap io;
};

// Every case of `arch` (causal-lm) in the manifest.
std::vector<GoldenCase> golden_cases(const std::string& arch) {
  json manifest = peft4j::io::read_json_file(kGolden + "/manifest.json");
  std::vector<GoldenCase> cases;
  for (const auto& entry : manifest["cases"]) {
    if (entry["arch"] != arch || entry["task"] != "causal-lm") continue;
    std::string name = entry["name"];
    cases.push_back({name, entry["tolerance"], peft4j::io::read_safetensors(kGolden + "/cases/" + name + "/io.safetensors")});
  }
  return cases;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

ModelOutput run(Model& model, const at::Tensor& ids, const at::Tensor& mask = {}) {
  ModelInputs inputs;
  inputs.input_ids = ids;
  inputs.attention_mask = mask;
  at::NoGradGuard no_grad;
  return model.forward(inputs);
}

// A case whose adapter is an identity at initialisation (logits == base_logits), so its greedy_ids and loss
// are the base model's.
const GoldenCase* identity_case(const std::vector<GoldenCase>& cases) {
  for (const auto& c : cases)
    if (c.io.count("base_logits") && c.io.count("greedy_ids") && at::equal(c.io.at("logits"), c.io.at("base_logits")))
      return &c;
  return nullptr;
}

class CausalGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalGolden, BaseLogitsMatchTransformers) {
  const std::string arch = GetParam();
  auto model = load_model(model_dir(arch));
  auto cases = golden_cases(arch);
  ASSERT_FALSE(cases.empty());
  int compared = 0;
  double worst = 0;
  for (const auto& c : cases) {
    if (!c.io.count("base_logits")) continue;
    at::Tensor logits = run(*model, c.io.at("input_ids"), c.io.at("attention_mask")).logits;
    const at::Tensor& expected = c.io.at("base_logits");
    ASSERT_EQ(logits.sizes(), expected.sizes()) << c.name;
    EXPECT_TRUE(at::allclose(logits, expected, c.tolerance["rtol"].get<double>(), c.tolerance["atol"].get<double>()))
        << c.name << ": max abs diff " << max_abs_diff(logits, expected);
    worst = std::max(worst, max_abs_diff(logits, expected));
    ++compared;
  }
  EXPECT_GT(compared, 0);
  std::cout << "[          ] " << arch << ": " << compared << " cases, max abs diff " << worst << "\n";
}

TEST_P(CausalGolden, LossEqualsShiftedCrossEntropy) {
  const std::string arch = GetParam();
  auto model = load_model(model_dir(arch));
  auto cases = golden_cases(arch);
  const auto& io = cases.front().io;
  at::Tensor labels = io.at("labels").clone();
  labels.index_put_({0, 3}, -100);  // ignored positions drop out of the mean
  ModelInputs inputs;
  inputs.input_ids = io.at("input_ids");
  inputs.attention_mask = io.at("attention_mask");
  inputs.labels = labels;
  ModelOutput out = model->forward(inputs);
  ASSERT_TRUE(out.loss.defined());

  // By hand: position t predicts label t + 1, averaged over the labels that are not -100.
  at::Tensor log_probs = at::log_softmax(out.logits.detach().to(at::kDouble), -1).slice(1, 0, -1);
  at::Tensor targets = labels.slice(1, 1);
  at::Tensor keep = targets.ne(-100);
  at::Tensor picked = log_probs.gather(2, targets.clamp_min(0).unsqueeze(2)).squeeze(2);
  double expected = -(picked * keep).sum().item<double>() / keep.sum().item<double>();
  EXPECT_NEAR(out.loss.item<double>(), expected, 1e-5);

  // With every label the golden identity case's loss is the base model's loss.
  if (const GoldenCase* identity = identity_case(cases)) {
    inputs.labels = identity->io.at("labels");
    at::NoGradGuard no_grad;
    EXPECT_NEAR(model->forward(inputs).loss.item<double>(), identity->io.at("loss").item<double>(), 1e-5)
        << identity->name;
  }
}

// New tokens of transformers 5.17's generate() (greedy) on the golden base models and the golden inputs:
// the first row alone (6 tokens), the batch with row 1's first 4 tokens replaced by left padding (8 tokens,
// pad_token_id 0), and the batch with repetition_penalty 1.3 (6 tokens).
struct GenerationReference {
  std::vector<int64_t> first_row;
  std::vector<std::vector<int64_t>> left_padded;
  std::vector<std::vector<int64_t>> penalised;
};

const std::map<std::string, GenerationReference>& generation_references() {
  static const std::map<std::string, GenerationReference> references = {
      {"llama",
       {{166, 226, 166, 226, 166, 226},
        {{166, 226, 166, 226, 166, 226, 166, 226}, {28, 98, 34, 29, 93, 227, 219, 248}},
        {{166, 226, 166, 130, 65, 166}, {28, 31, 35, 24, 95, 93}}}},
      {"qwen2",
       {{37, 37, 37, 37, 37, 37},
        {{37, 37, 37, 37, 37, 37, 37, 37}, {135, 135, 135, 135, 135, 135, 135, 135}},
        {{37, 37, 37, 37, 37, 37}, {135, 135, 135, 135, 135, 135}}}},
      {"gpt2",
       {{37, 37, 37, 37, 37, 37},
        {{37, 37, 37, 37, 37, 37, 37, 37}, {135, 135, 135, 135, 135, 135, 135, 135}},
        {{37, 37, 37, 37, 37, 37}, {135, 135, 135, 135, 13, 13}}}},
  };
  return references;
}

at::Tensor new_tokens(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(rows.size()), -1});
}

TEST_P(CausalGolden, GreedyGenerationMatchesTransformers) {
  const std::string arch = GetParam();
  const GenerationReference& reference = generation_references().at(arch);
  auto model = load_model(model_dir(arch));
  auto cases = golden_cases(arch);
  at::Tensor ids = cases.front().io.at("input_ids");
  GenerationConfig config = GenerationConfig::from_json(model->config());
  config.max_new_tokens = 6;
  at::Tensor first = generate(*model, ids.slice(0, 0, 1), {}, config);
  EXPECT_TRUE(at::equal(first.slice(1, 9), new_tokens({reference.first_row}))) << first;
  // The golden greedy_ids of a case whose adapter starts as the identity are the base model's too.
  if (const GoldenCase* identity = identity_case(cases))
    EXPECT_TRUE(at::equal(first, identity->io.at("greedy_ids"))) << identity->name;

  at::Tensor padded = ids.clone(), mask = at::ones_like(ids);
  padded.index_put_({1, at::indexing::Slice(0, 4)}, 0);
  mask.index_put_({1, at::indexing::Slice(0, 4)}, 0);
  config.max_new_tokens = 8;
  config.pad_token_id = 0;
  at::Tensor left = generate(*model, padded, mask, config);
  EXPECT_TRUE(at::equal(left.slice(1, 0, 9), padded));
  EXPECT_TRUE(at::equal(left.slice(1, 9), new_tokens(reference.left_padded))) << left;

  config.max_new_tokens = 6;
  config.repetition_penalty = 1.3;
  at::Tensor penalised = generate(*model, ids, {}, config);
  EXPECT_TRUE(at::equal(penalised.slice(1, 9), new_tokens(reference.penalised))) << penalised;
}

TEST_P(CausalGolden, CachedGenerationEqualsRecomputation) {
  auto model = load_model(model_dir(GetParam()));
  at::Tensor prompt = golden_cases(GetParam()).front().io.at("input_ids");
  GenerationConfig config;
  config.max_new_tokens = 12;
  at::Tensor cached = generate(*model, prompt, {}, config);
  config.use_cache = false;
  at::Tensor recomputed = generate(*model, prompt, {}, config);
  EXPECT_EQ(cached.sizes(), at::IntArrayRef({2, 9 + 12}));
  EXPECT_TRUE(at::equal(cached, recomputed)) << cached << recomputed;

  // The incremental logits equal those of one pass over the whole sequence.
  ModelInputs first;
  first.input_ids = cached.slice(1, 0, 15);
  first.use_cache = true;
  at::NoGradGuard no_grad;
  ModelOutput out = model->forward(first);
  ASSERT_TRUE(out.past_key_values.has_value());
  EXPECT_EQ(out.past_key_values->length(), 15);
  ModelInputs next;
  next.input_ids = cached.slice(1, 15);
  next.past_key_values = out.past_key_values;
  next.use_cache = true;
  ModelOutput step = model->forward(next);
  EXPECT_EQ(step.past_key_values->length(), 21);
  at::Tensor full = run(*model, cached).logits.slice(1, 15);
  EXPECT_TRUE(at::allclose(step.logits, full, 1e-4, 1e-5)) << max_abs_diff(step.logits, full);
}

TEST_P(CausalGolden, SamplingIsReproducibleFromTheSeed) {
  auto model = load_model(model_dir(GetParam()));
  at::Tensor prompt = golden_cases(GetParam()).front().io.at("input_ids");
  GenerationConfig config;
  config.max_new_tokens = 16;
  config.do_sample = true;
  config.temperature = 2.0;  // flatten the tiny model's distribution so that draws differ
  config.top_k = 0;
  config.seed = 7;
  at::Tensor a = generate(*model, prompt, {}, config);
  at::Tensor b = generate(*model, prompt, {}, config);
  EXPECT_TRUE(at::equal(a, b));
  config.seed = 8;
  EXPECT_FALSE(at::equal(a, generate(*model, prompt, {}, config)));
  // top_k = 1 and a tiny top_p both reduce sampling to greedy search.
  GenerationConfig greedy;
  greedy.max_new_tokens = 16;
  at::Tensor expected = generate(*model, prompt, {}, greedy);
  config.temperature = 1.0;
  config.top_k = 1;
  EXPECT_TRUE(at::equal(generate(*model, prompt, {}, config), expected));
  config.top_k = 0;
  config.top_p = 1e-6;
  EXPECT_TRUE(at::equal(generate(*model, prompt, {}, config), expected));
}

TEST_P(CausalGolden, LeftPaddedBatchGeneratesLikeEachRowAlone) {
  auto model = load_model(model_dir(GetParam()));
  at::Tensor ids = golden_cases(GetParam()).front().io.at("input_ids");
  const int64_t pad = 0, short_length = 5;
  at::Tensor batch = ids.clone();
  at::Tensor mask = at::ones_like(ids);
  batch.index_put_({1, at::indexing::Slice(0, 9 - short_length)}, pad);
  mask.index_put_({1, at::indexing::Slice(0, 9 - short_length)}, 0);
  GenerationConfig config;
  config.max_new_tokens = 8;
  at::Tensor together = generate(*model, batch, mask, config);
  at::Tensor alone0 = generate(*model, ids.slice(0, 0, 1), {}, config);
  at::Tensor alone1 = generate(*model, ids.slice(0, 1, 2).slice(1, 9 - short_length), {}, config);
  EXPECT_TRUE(at::equal(together.slice(0, 0, 1), alone0)) << together << alone0;
  EXPECT_TRUE(at::equal(together.slice(0, 1, 2).slice(1, 9 - short_length), alone1)) << together << alone1;
}

TEST_P(CausalGolden, PaddedPositionsDoNotChangeRealTokens) {
  auto model = load_model(model_dir(GetParam()));
  at::Tensor ids = golden_cases(GetParam()).front().io.at("input_ids").slice(0, 0, 1);
  at::Tensor alone = run(*model, ids.slice(1, 0, 6)).logits;
  // Right padding: the first 6 positions are unaffected.
  at::Tensor right_mask = at::ones_like(ids);
  right_mask.slice(1, 6).fill_(0);
  at::Tensor right = run(*model, ids, right_mask).logits.slice(1, 0, 6);
  EXPECT_TRUE(at::allclose(right, alone, 1e-4, 1e-5)) << max_abs_diff(right, alone);
  // Left padding with positions counted from the first real token (as generate() passes them).
  at::Tensor left_ids = at::cat({at::zeros({1, 3}, ids.options()), ids.slice(1, 0, 6)}, 1);
  at::Tensor left_mask = at::cat({at::zeros({1, 3}, ids.options()), at::ones({1, 6}, ids.options())}, 1);
  ModelInputs inputs;
  inputs.input_ids = left_ids;
  inputs.attention_mask = left_mask;
  inputs.position_ids = (left_mask.cumsum(-1) - 1).clamp_min(0);
  at::NoGradGuard no_grad;
  ModelOutput out = model->forward(inputs);
  at::Tensor left = out.logits.slice(1, 3);
  EXPECT_TRUE(at::allclose(left, alone, 1e-4, 1e-5)) << max_abs_diff(left, alone);
  EXPECT_FALSE(out.logits.isnan().any().item<bool>());  // fully masked padding rows stay finite
}

TEST_P(CausalGolden, InputsEmbedsEqualInputIds) {
  auto model = load_model(model_dir(GetParam()));
  auto cases = golden_cases(GetParam());
  const auto& io = cases.front().io;
  ModelInputs inputs;
  at::NoGradGuard no_grad;
  inputs.inputs_embeds = model->embed(io.at("input_ids"));
  inputs.attention_mask = io.at("attention_mask");
  at::Tensor from_embeds = model->forward(inputs).logits;
  EXPECT_TRUE(at::equal(from_embeds, run(*model, io.at("input_ids"), io.at("attention_mask")).logits));
}

TEST_P(CausalGolden, PrefixPastKeyValuesActAsEarlierTokens) {
  auto model = load_model(model_dir(GetParam()));
  at::Tensor ids = golden_cases(GetParam()).front().io.at("input_ids");
  const int64_t prefix = 4;
  ModelInputs first;
  first.input_ids = ids.slice(1, 0, prefix);
  first.use_cache = true;
  at::NoGradGuard no_grad;
  PastKeyValues past = *model->forward(first).past_key_values;
  ASSERT_EQ(static_cast<int64_t>(past.self_attn.size()), model->num_layers());
  EXPECT_EQ(past.self_attn[0].key.sizes(),
            at::IntArrayRef({2, model->num_kv_heads(), prefix, model->head_dim()}));
  // As PEFT's prefix tuning calls it: the prefix in past_key_values, the mask extended by P ones in front,
  // positions continuing after the prefix (transformers' default).
  ModelInputs rest;
  rest.input_ids = ids.slice(1, prefix);
  rest.attention_mask = at::ones({2, 9}, at::kLong);
  rest.past_key_values = past;
  at::Tensor with_prefix = model->forward(rest).logits;
  at::Tensor full = run(*model, ids).logits.slice(1, prefix);
  EXPECT_TRUE(at::allclose(with_prefix, full, 1e-4, 1e-5)) << max_abs_diff(with_prefix, full);
  // The prefix is masked per row like any other key.
  rest.attention_mask.index_put_({1, 0}, 0);
  at::Tensor masked = model->forward(rest).logits;
  EXPECT_TRUE(at::allclose(masked[0], with_prefix[0], 1e-5, 1e-6));
  EXPECT_GT(max_abs_diff(masked[1], with_prefix[1]), 1e-4);
}

TEST_P(CausalGolden, ParameterNamesAreTheCheckpointKeys) {
  auto model = load_model(model_dir(GetParam()));
  std::set<std::string> names;
  for (const auto& item : model->named_parameters()) names.insert(item.key());
  std::set<std::string> keys;
  for (const auto& info : peft4j::io::read_safetensors_header(model_dir(GetParam()) + "/model.safetensors").tensors)
    keys.insert(info.name);
  if (model->is_optional_key("lm_head.weight")) {
    // Tied: lm_head.weight is the embedding tensor itself.
    EXPECT_EQ(names.erase("lm_head.weight"), 1u);
    auto params = model->named_parameters();
    EXPECT_TRUE(params["lm_head.weight"].is_same(model->input_embeddings().named_parameters()["weight"]));
  }
  EXPECT_EQ(names, keys);
}

TEST_P(CausalGolden, ReplacedProjectionIsUsed) {
  // A tuner swaps a child by name; the model must call the replacement.
  struct Doubling : torch::nn::Module, TensorModule {
    explicit Doubling(std::shared_ptr<torch::nn::Module> inner) : inner_(std::move(inner)) {
      register_module("base_layer", inner_);
    }
    at::Tensor forward(const at::Tensor& x) override { return 2 * forward_module(*inner_, x); }
    std::shared_ptr<torch::nn::Module> inner_;
  };
  auto model = load_model(model_dir(GetParam()));
  at::Tensor ids = golden_cases(GetParam()).front().io.at("input_ids");
  at::Tensor before = run(*model, ids).logits;
  const std::string parent = GetParam() == "gpt2" ? "transformer.h.0.mlp" : "model.layers.0.mlp";
  const std::string child = GetParam() == "gpt2" ? "c_proj" : "down_proj";
  auto modules = model->named_modules();
  auto& parent_module = *modules[parent];
  auto original = parent_module.named_children()[child];
  parent_module.replace_module(child, std::make_shared<Doubling>(original));
  EXPECT_TRUE(model->named_parameters().contains(parent + "." + child + ".base_layer.weight"));
  EXPECT_GT(max_abs_diff(run(*model, ids).logits, before), 1e-4);
  parent_module.replace_module(child, original);
  EXPECT_TRUE(at::equal(run(*model, ids).logits, before));
}

TEST_P(CausalGolden, HalfPrecisionWeightsStayClose) {
  auto cases = golden_cases(GetParam());
  at::Tensor ids = cases.front().io.at("input_ids");
  const at::Tensor& reference = cases.front().io.at("base_logits");
  // libtorch 1.13 has no f16 matmul or layer norm on the CPU (2.x has): f16 computes on CUDA there.
  std::vector<at::ScalarType> dtypes = {at::kBFloat16};
  if (PEFT4J_TORCH_AT_LEAST(2, 0)) dtypes.push_back(at::kHalf);
  for (at::ScalarType dtype : dtypes) {
    auto model = load_model(model_dir(GetParam()));
    model->to(dtype);
    ModelInputs inputs;
    inputs.input_ids = ids;
    inputs.labels = ids;
    inputs.use_cache = true;
    at::NoGradGuard no_grad;
    ModelOutput out = model->forward(inputs);
    EXPECT_EQ(out.logits.scalar_type(), dtype);
    EXPECT_EQ(out.loss.scalar_type(), at::kFloat);
    EXPECT_EQ(out.past_key_values->self_attn[0].key.scalar_type(), dtype);
    EXPECT_LT(max_abs_diff(out.logits, reference), dtype == at::kHalf ? 0.01 : 0.05) << dtype;
    GenerationConfig config;
    config.max_new_tokens = 4;
    EXPECT_EQ(generate(*model, ids, {}, config).size(1), 13) << dtype;
  }
}

TEST_P(CausalGolden, HalfPrecisionCheckpointLoadsIntoTheModelDtype) {
  auto files = peft4j::io::read_model_dir(model_dir(GetParam()));
  auto cases = golden_cases(GetParam());
  for (at::ScalarType stored : {at::kHalf, at::kBFloat16}) {
    peft4j::io::TensorMap tensors;
    for (const auto& [name, tensor] : files.tensors) tensors[name] = tensor.to(stored);
    auto model = create_model(files.config);
    load_weights(*model, tensors, "converted checkpoint");
    EXPECT_EQ(model->parameters().front().scalar_type(), at::kFloat);
    at::Tensor logits = run(*model, cases.front().io.at("input_ids")).logits;
    EXPECT_LT(max_abs_diff(logits, cases.front().io.at("base_logits")), stored == at::kHalf ? 0.01 : 0.05) << stored;
  }
}

INSTANTIATE_TEST_SUITE_P(Causal, CausalGolden, ::testing::Values("llama", "qwen2", "gpt2"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- configuration, rotary embeddings, sliding windows ----

json tiny_llama_config(const std::string& type) {
  return json{{"model_type", type},        {"vocab_size", 50},          {"hidden_size", 32},
              {"intermediate_size", 48},   {"num_hidden_layers", 1},    {"num_attention_heads", 4},
              {"num_key_value_heads", 2},  {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6},
              {"tie_word_embeddings", false}};
}

void randomize(Model& model, uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& parameter : model.parameters()) parameter.normal_(0, 0.3, generator);
}

TEST(CausalRope, InverseFrequenciesFollowTheRopeType) {
  const int64_t dim = 16;
  auto frequency = [&](int64_t i) { return 1.0 / std::pow(500000.0, 2.0 * i / dim); };
  json config = tiny_llama_config("llama");
  config["rope_theta"] = 500000.0;  // legacy field, with legacy "rope_scaling" and its "type" key
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  RopeConfig linear = RopeConfig::from_json(config, 64);
  EXPECT_EQ(linear.rope_type, "linear");
  at::Tensor got = linear.inverse_frequencies(dim);
  for (int64_t i = 0; i < dim / 2; ++i) EXPECT_NEAR(got[i].item<double>(), frequency(i) / 4.0, 1e-6 * frequency(i));

  config.erase("rope_scaling");
  config["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                               {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                               {"original_max_position_embeddings", 64}};
  RopeConfig llama3 = RopeConfig::from_json(config, 128);
  got = llama3.inverse_frequencies(dim);
  for (int64_t i = 0; i < dim / 2; ++i) {
    double f = frequency(i), wavelength = 2 * M_PI / f, expected;
    if (wavelength < 64 / 4.0)
      expected = f;
    else if (wavelength > 64 / 1.0)
      expected = f / 8.0;
    else {
      double smooth = (64 / wavelength - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * f / 8.0 + smooth * f;
    }
    EXPECT_NEAR(got[i].item<double>(), expected, 1e-5 * expected) << i;
  }
  config["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 2.0}};
  EXPECT_THROW(RopeConfig::from_json(config, 64), peft4j::Error);
}

TEST(CausalLlama, ConfigErrorsNameTheField) {
  json config = tiny_llama_config("llama");
  config["num_key_value_heads"] = 3;
  try {
    LlamaForCausalLM model(config);
    FAIL() << "expected an error";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), peft4j::ErrorKind::Format);
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads"), std::string::npos) << e.what();
  }
  config = tiny_llama_config("llama");
  config["hidden_act"] = "xielu";
  EXPECT_THROW(LlamaForCausalLM{config}, peft4j::Error);
}

TEST(CausalLlama, ExplicitHeadDimAndBiases) {
  json config = tiny_llama_config("llama");
  config["head_dim"] = 4;  // not hidden_size / heads
  config["attention_bias"] = true;
  config["mlp_bias"] = true;
  LlamaForCausalLM model(config);
  auto params = model.named_parameters();
  EXPECT_EQ(params["model.layers.0.self_attn.q_proj.weight"].sizes(), at::IntArrayRef({16, 32}));
  EXPECT_EQ(params["model.layers.0.self_attn.k_proj.weight"].sizes(), at::IntArrayRef({8, 32}));
  EXPECT_EQ(params["model.layers.0.self_attn.o_proj.weight"].sizes(), at::IntArrayRef({32, 16}));
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_TRUE(params.contains("model.layers.0.mlp.down_proj.bias"));
  randomize(model, 1);
  at::Tensor ids = at::randint(50, {2, 7}, at::kLong);
  EXPECT_EQ(run(model, ids).logits.sizes(), at::IntArrayRef({2, 7, 50}));
}

TEST(CausalMistral, SlidingWindowLimitsWhatEachPositionSees) {
  json config = tiny_llama_config("mistral");
  config["sliding_window"] = 3;
  auto model = create_model(config);
  randomize(*model, 2);
  at::Tensor ids = at::randint(50, {1, 10}, at::Generator(at::make_generator<at::CPUGeneratorImpl>(3)));
  at::Tensor base = run(*model, ids).logits;
  ASSERT_FALSE(base.isnan().any().item<bool>());
  // One layer: position t sees tokens t-2 .. t only, so changing token 0 changes positions 0..2 alone.
  at::Tensor changed_ids = ids.clone();
  changed_ids.index_put_({0, 0}, (ids[0][0].item<int64_t>() + 1) % 50);
  at::Tensor changed = run(*model, changed_ids).logits;
  for (int64_t t = 0; t < 10; ++t) {
    double diff = max_abs_diff(changed.select(1, t), base.select(1, t));
    if (t < 3)
      EXPECT_GT(diff, 1e-4) << t;
    else
      EXPECT_EQ(diff, 0.0) << t;
  }
  // A window as long as the sequence is plain causal attention, as sliding_window null is.
  json full_config = config;
  full_config["sliding_window"] = nullptr;
  auto full = create_model(full_config);
  json wide_config = config;
  wide_config["sliding_window"] = 10;
  auto wide = create_model(wide_config);
  for (auto* m : {full.get(), wide.get()}) {
    auto target = m->named_parameters();
    at::NoGradGuard no_grad;
    for (const auto& item : model->named_parameters()) target[item.key()].copy_(item.value());
  }
  EXPECT_TRUE(at::allclose(run(*full, ids).logits, run(*wide, ids).logits, 1e-5, 1e-6));
  EXPECT_GT(max_abs_diff(run(*full, ids).logits, base), 1e-4);
  // The window also holds across cached steps.
  GenerationConfig generation;
  generation.max_new_tokens = 8;
  at::Tensor cached = generate(*model, ids, {}, generation);
  generation.use_cache = false;
  EXPECT_TRUE(at::equal(cached, generate(*model, ids, {}, generation)));
}

TEST(CausalQwen2, SlidingLayersFollowLayerTypes) {
  json config = tiny_llama_config("qwen2");
  config["num_hidden_layers"] = 2;
  config["use_sliding_window"] = true;
  config["sliding_window"] = 2;
  config["max_window_layers"] = 1;
  LlamaConfig parsed = LlamaConfig::from_json(config);
  EXPECT_FALSE(parsed.layer_windows[0].has_value());
  EXPECT_EQ(parsed.layer_windows[1], std::optional<int64_t>(2));
  EXPECT_TRUE(parsed.qkv_bias);
  EXPECT_FALSE(parsed.o_bias);
  config["layer_types"] = {"sliding_attention", "full_attention"};
  parsed = LlamaConfig::from_json(config);
  EXPECT_EQ(parsed.layer_windows[0], std::optional<int64_t>(2));
  EXPECT_FALSE(parsed.layer_windows[1].has_value());
  config["use_sliding_window"] = false;  // then no layer slides, and a sliding layer type is an error
  EXPECT_THROW(LlamaConfig::from_json(config), peft4j::Error);
  config.erase("layer_types");
  parsed = LlamaConfig::from_json(config);
  EXPECT_FALSE(parsed.layer_windows[0].has_value() || parsed.layer_windows[1].has_value());
}

// ---- GPT-2 specifics ----

TEST(CausalGPT2, Conv1DIsTransposedLinear) {
  Conv1D conv(3, 5);
  at::Tensor x = at::randn({2, 4, 3});
  {
    at::NoGradGuard no_grad;
    conv->weight.normal_();
    conv->bias.normal_();
  }
  at::Tensor expected = at::matmul(x, conv->weight) + conv->bias;
  EXPECT_TRUE(at::allclose(conv->forward(x), expected, 1e-5, 1e-6));
  EXPECT_EQ(conv->named_parameters()["weight"].sizes(), at::IntArrayRef({3, 5}));
}

TEST(CausalGPT2, AttentionScalingOptions) {
  json config = peft4j::io::read_json_file(model_dir("gpt2") + "/config.json");
  auto reference = load_model(model_dir("gpt2"));
  at::Tensor ids = at::randint(256, {2, 6}, at::kLong);
  at::Tensor logits = run(*reference, ids).logits;
  auto variant = [&](const std::string& option) {
    json changed = config;
    changed[option] = !config.value(option, false);
    auto model = create_model(changed);
    load_weights(*model, peft4j::io::read_model_dir(model_dir("gpt2")).tensors, "gpt2");
    return run(*model, ids).logits;
  };
  // Upcasting changes nothing for f32 weights; the other two change the attention scores.
  EXPECT_TRUE(at::allclose(variant("reorder_and_upcast_attn"), logits, 1e-5, 1e-6));
  EXPECT_GT(max_abs_diff(variant("scale_attn_by_inverse_layer_idx"), logits), 1e-4);
  EXPECT_GT(max_abs_diff(variant("scale_attn_weights"), logits), 1e-4);
  // Old checkpoints' causal-mask buffers are accepted and ignored.
  auto tensors = peft4j::io::read_model_dir(model_dir("gpt2")).tensors;
  tensors["transformer.h.0.attn.bias"] = at::ones({1, 1, 128, 128});
  tensors["transformer.h.0.attn.masked_bias"] = at::tensor(-1e4);
  load_weights(*reference, tensors, "old gpt2");
  EXPECT_TRUE(at::equal(run(*reference, ids).logits, logits));
}

TEST(CausalGPT2, BareGPT2ModelCheckpointLoads) {
  // GPT2Model checkpoints (openai-community/gpt2 among them) name "h.0....", "wte.weight": without the
  // "transformer." of GPT2LMHeadModel, which from_pretrained adds; the tied lm_head is absent from them anyway.
  auto reference = load_model(model_dir("gpt2"));
  auto files = peft4j::io::read_model_dir(model_dir("gpt2"));
  peft4j::io::TensorMap bare;
  for (const auto& [key, t] : files.tensors)
    if (key.rfind("transformer.", 0) == 0) bare[key.substr(12)] = t;
  ASSERT_FALSE(bare.empty());
  auto model = create_model(files.config);
  load_weights(*model, bare, "bare gpt2");
  at::Tensor ids = at::randint(256, {2, 6}, at::kLong);
  EXPECT_TRUE(at::equal(run(*model, ids).logits, run(*reference, ids).logits));
  // A bare checkpoint still has to fit: a missing tensor is named with the prefix the model uses.
  bare.erase("h.1.mlp.c_fc.weight");
  try {
    load_weights(*create_model(files.config), bare, "bare gpt2");
    FAIL() << "a missing tensor was not reported";
  } catch (const peft4j::Error& e) {
    EXPECT_NE(std::string(e.what()).find("transformer.h.1.mlp.c_fc.weight"), std::string::npos) << e.what();
  }
}

TEST(CausalGPT2, PositionsBeyondTheTableAreRejected) {
  auto model = load_model(model_dir("gpt2"));
  at::Tensor ids = at::zeros({1, 129}, at::kLong);  // n_positions = 128
  EXPECT_THROW(run(*model, ids), peft4j::Error);
}

// ---- loading ----

TEST(CausalLoad, ErrorsNameTheTensor) {
  auto files = peft4j::io::read_model_dir(model_dir("llama"));
  auto expect_error = [&](peft4j::io::TensorMap tensors, const std::string& name) {
    auto model = create_model(files.config);
    try {
      load_weights(*model, tensors, "test");
      FAIL() << "expected an error naming " << name;
    } catch (const peft4j::Error& e) {
      EXPECT_EQ(e.kind(), peft4j::ErrorKind::Format);
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  auto missing = files.tensors;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  expect_error(missing, "model.layers.1.mlp.up_proj.weight");
  auto extra = files.tensors;
  extra["model.layers.0.self_attn.q_norm.weight"] = at::ones({16});
  expect_error(extra, "model.layers.0.self_attn.q_norm.weight");
  auto wrong = files.tensors;
  wrong["model.layers.0.self_attn.k_proj.weight"] = at::zeros({64, 64});
  expect_error(wrong, "model.layers.0.self_attn.k_proj.weight");
  // Optional keys: rotary buffers of old checkpoints; a tied head may be present or absent.
  auto with_rotary = files.tensors;
  with_rotary["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::ones({8});
  auto model = create_model(files.config);
  EXPECT_NO_THROW(load_weights(*model, with_rotary, "test"));
  auto qwen = peft4j::io::read_model_dir(model_dir("qwen2"));
  qwen.tensors["lm_head.weight"] = qwen.tensors.at("model.embed_tokens.weight").clone();
  EXPECT_NO_THROW(load_weights(*create_model(qwen.config), qwen.tensors, "qwen2 with lm_head"));
}

TEST(CausalLoad, FamiliesAreRegistered) {
  auto types = registered_model_types();
  for (const char* type : {"llama", "qwen2", "mistral", "gpt2"})
    EXPECT_NE(std::find(types.begin(), types.end(), type), types.end()) << type;
  EXPECT_EQ(create_model(tiny_llama_config("qwen2"))->model_type(), "qwen2");
  EXPECT_EQ(create_model(tiny_llama_config("mistral"))->task(), Task::CausalLM);
}

// ---- generation options ----

TEST(CausalGeneration, StopsAtEosAndPadsFinishedRows) {
  auto model = load_model(model_dir("llama"));
  at::Tensor ids = golden_cases("llama").front().io.at("input_ids");
  GenerationConfig config;
  config.max_new_tokens = 6;
  at::Tensor free_run = generate(*model, ids, {}, config);
  // Make row 0's second new token an eos: row 0 stops and is padded, row 1 runs on.
  const int64_t eos = free_run[0][10].item<int64_t>();
  config.eos_token_ids = {eos};
  config.pad_token_id = 3;
  at::Tensor stopped = generate(*model, ids, {}, config);
  EXPECT_TRUE(at::equal(stopped[0].slice(0, 0, 11), free_run[0].slice(0, 0, 11)));
  for (int64_t t = 11; t < stopped.size(1); ++t)
    EXPECT_EQ(stopped[0][t].item<int64_t>(), 3) << stopped;
  bool row1_has_eos = at::isin(free_run[1].slice(0, 9), at::tensor({eos})).any().item<bool>();
  if (!row1_has_eos) EXPECT_TRUE(at::equal(stopped[1], free_run[1]));
  // A single row ends the whole generation at its eos.
  at::Tensor single = generate(*model, ids.slice(0, 0, 1), {}, config);
  EXPECT_EQ(single.size(1), 11);
}

TEST(CausalGeneration, RepetitionPenaltyAndValidation) {
  auto model = load_model(model_dir("gpt2"));
  at::Tensor ids = golden_cases("gpt2").front().io.at("input_ids").slice(0, 0, 1);
  GenerationConfig config;
  config.max_new_tokens = 6;
  at::Tensor plain = generate(*model, ids, {}, config);
  config.repetition_penalty = 1e6;  // no token may repeat while any unseen one is left
  at::Tensor penalised = generate(*model, ids, {}, config);
  std::set<int64_t> seen;
  for (int64_t t = 0; t < penalised.size(1); ++t) {
    int64_t token = penalised[0][t].item<int64_t>();
    if (t >= 9) EXPECT_FALSE(seen.count(token)) << penalised;
    seen.insert(token);
  }
  EXPECT_FALSE(at::equal(plain, penalised));
  config.repetition_penalty = 0;
  EXPECT_THROW(generate(*model, ids, {}, config), peft4j::Error);
  config = GenerationConfig{};
  config.do_sample = true;
  config.temperature = 0;
  EXPECT_THROW(generate(*model, ids, {}, config), peft4j::Error);
  config = GenerationConfig{};
  EXPECT_THROW(generate(*model, ids, at::ones({1, 3}, at::kLong), config), peft4j::Error);
}

TEST(CausalGeneration, Seq2SeqGreedyMatchesTransformers) {
  auto types = registered_model_types();
  if (std::find(types.begin(), types.end(), "t5") == types.end()) GTEST_SKIP() << "no t5 model family";
  auto model = load_model(model_dir("t5"));
  auto io = peft4j::io::read_safetensors(kGolden + "/cases/lora_t5/io.safetensors");
  GenerationConfig config = GenerationConfig::from_json(model->config());
  config.max_new_tokens = 8;
  // transformers 5.17's generate() on the golden T5 and inputs (right-padded row 1); decoder_start_token_id 0.
  at::Tensor expected = new_tokens({{0, 132, 132, 132, 132, 132, 132, 132, 132}, {0, 0, 0, 0, 0, 0, 0, 0, 0}});
  at::Tensor cached = generate(*model, io.at("input_ids"), io.at("attention_mask"), config);
  EXPECT_TRUE(at::equal(cached, expected)) << cached;
  config.use_cache = false;
  EXPECT_TRUE(at::equal(generate(*model, io.at("input_ids"), io.at("attention_mask"), config), expected));
  config.use_cache = true;
  config.repetition_penalty = 1.5;
  at::Tensor penalised = generate(*model, io.at("input_ids"), io.at("attention_mask"), config);
  EXPECT_TRUE(at::equal(penalised, new_tokens({{0, 132, 76, 76, 76, 76, 76, 76, 76}, {0, 203, 203, 203, 253, 253, 253, 253, 253}})))
      << penalised;
}

TEST(CausalGeneration, ConfigFromJson) {
  GenerationConfig config = GenerationConfig::from_json(json{{"eos_token_id", json::array({2, 5})}, {"pad_token_id", 0}});
  EXPECT_EQ(config.eos_token_ids, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(config.pad_token_id, std::optional<int64_t>(0));
  config = GenerationConfig::from_json(json{{"eos_token_id", 7}, {"pad_token_id", nullptr}});
  EXPECT_EQ(config.eos_token_ids, (std::vector<int64_t>{7}));
  EXPECT_FALSE(config.pad_token_id.has_value());
  EXPECT_THROW(GenerationConfig::from_json(json{{"eos_token_id", "x"}}), peft4j::Error);
}

}  // namespace
