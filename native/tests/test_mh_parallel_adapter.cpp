// Multi-head parallel adapter (mh_parallel_adapter.h): trainable counts against the formula on llama, gpt2, bert and t5,
// identity at initialisation, the term before the output projection recomputed per head from the registered tensors
// and the attention input, learning, save/load, malformed files, generation with a cache, refused configs.
#include <gtest/gtest.h>

#include "adapter_family_testing.h"
#include "golden_testing.h"
#include "peft4j/models/generation.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/config.h"

namespace {

using namespace adapter_family_testing;
using golden_testing::expect_error;
using golden_testing::logits;
using peft4j::ErrorKind;
using peft4j::tuners::PeftModel;

const char* kType = "MH_PARALLEL_ADAPTER";

// Weights drawn from a fixed seed, as tiny_model does for the causal families.
std::shared_ptr<peft4j::models::Model> seeded(const nlohmann::json& config) {
  auto model = peft4j::models::create_model(config);
  at::manual_seed(4321);
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(true)) p.value().normal_(0.0, 0.2);
  return model;
}

// BERT (seq-cls): hidden 16, 2 heads of 8, 2 layers. T5: d_model 16, 2 heads of d_kv 12 (inner width 24 != d_model),
// 2 encoder and 3 decoder blocks.
std::shared_ptr<peft4j::models::Model> tiny(const std::string& family) {
  if (family == "bert")
    return seeded({{"model_type", "bert"}, {"vocab_size", kVocab}, {"hidden_size", 16}, {"num_hidden_layers", 2},
                   {"num_attention_heads", 2}, {"intermediate_size", 24}, {"hidden_act", "gelu"},
                   {"hidden_dropout_prob", 0.0}, {"attention_probs_dropout_prob", 0.0},
                   {"max_position_embeddings", 32}, {"type_vocab_size", 2}, {"num_labels", 3}});
  if (family == "t5")
    return seeded({{"model_type", "t5"}, {"vocab_size", kVocab}, {"d_model", 16}, {"d_kv", 12}, {"d_ff", 24},
                   {"num_layers", 2}, {"num_decoder_layers", 3}, {"num_heads", 2}, {"dropout_rate", 0.0},
                   {"feed_forward_proj", "relu"}, {"relative_attention_num_buckets", 8},
                   {"relative_attention_max_distance", 12}, {"decoder_start_token_id", 0}, {"pad_token_id", 0}});
  return tiny_model(family);
}

peft4j::models::ModelInputs inputs_for(const std::string& family) {
  auto in = permutation_batch(3, 7, 11);
  in.labels = at::Tensor();
  if (family == "t5") in.decoder_input_ids = permutation_batch(3, 5, 12).input_ids;
  return in;
}

nlohmann::json config(const nlohmann::json& fields = nlohmann::json::object()) {
  nlohmann::json out = {{"peft_type", kType}};
  out.update(fields);
  return out;
}

void perturb(PeftModel& model, double scale = 0.3) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : model.trainable_parameters()) p.add_(at::randn_like(p) * scale);
}

struct Shape {
  int64_t d, heads, head_dim, attentions;  // attentions: self-attention layers of the model
};

Shape shape_of(const std::string& family) {
  if (family == "bert") return {16, 2, 8, 2};
  if (family == "t5") return {16, 2, 12, 5};
  return {kHidden, 4, kHidden / 4, kLayers};
}

int64_t per_layer(const Shape& s, int64_t r) { return s.heads * (s.d * r + r) + s.heads * (r * s.head_dim + s.head_dim); }

TEST(MhParallelAdapter, TrainableCountMatchesTheFormula) {
  for (const std::string family : {"llama", "gpt2", "bert", "t5"}) {
    const Shape s = shape_of(family);
    for (int64_t r : {1, 3}) {
      PeftModel model(tiny(family));
      model.add_adapter("default", config({{"bottleneck_size", r}}));
      EXPECT_EQ(model.trainable_parameter_count(), s.attentions * per_layer(s, r)) << family << " r " << r;
      EXPECT_EQ(count_named(model, ".mh_adapters.default."), s.attentions * per_layer(s, r)) << family;
    }
    PeftModel learned(tiny(family));
    learned.add_adapter("default", config({{"bottleneck_size", 2}, {"scaling", "learned"}}));
    EXPECT_EQ(learned.trainable_parameter_count(), s.attentions * (per_layer(s, 2) + 1)) << family;
    // leave_out 1: layer 1's share goes; on T5 that is encoder and decoder block 1.
    PeftModel left(tiny(family));
    left.add_adapter("default", config({{"bottleneck_size", 2}, {"leave_out", {1}}}));
    const int64_t removed = family == "t5" ? 2 : 1;
    EXPECT_EQ(left.trainable_parameter_count(), (s.attentions - removed) * per_layer(s, 2)) << family;
    EXPECT_EQ(count_named(left, family == "t5" ? "block.1." : ".1."), 0) << family;
  }
  // The default width is 8 per head.
  PeftModel defaults(tiny("llama"));
  defaults.add_adapter("default", config());
  EXPECT_EQ(defaults.trainable_parameter_count(), kLayers * per_layer(shape_of("llama"), 8));
}

TEST(MhParallelAdapter, UntrainedAdapterLeavesTheLogitsUnchanged) {
  for (const std::string family : {"llama", "gpt2", "bert", "t5"}) {
    PeftModel model(tiny(family));
    auto in = inputs_for(family);
    at::Tensor base = logits(model, in);
    model.add_adapter("default", config({{"bottleneck_size", 4}, {"non_linearity", "gelu"}}));
    EXPECT_TRUE(at::equal(logits(model, in), base)) << family;
    // The adapter does act once its up projection is no longer zero.
    perturb(model);
    at::Tensor adapted = logits(model, in);
    EXPECT_FALSE(at::allclose(adapted, base, 1e-4, 1e-4)) << family;
    model.set_disabled(true);
    EXPECT_TRUE(at::equal(logits(model, in), base)) << family;
  }
}

// "bert" initialisation: N(0, 0.02) weights (so not the identity), zero biases.
TEST(MhParallelAdapter, BertInitDrawsSmallWeightsAndZeroBiases) {
  PeftModel model(tiny("gpt2"));
  auto in = inputs_for("gpt2");
  at::Tensor base = logits(model, in);
  model.add_adapter("default", config({{"init_weights", "bert"}, {"bottleneck_size", 16}}));
  for (const auto& [name, p] : model.trainable_parameters()) {
    if (name.find(".bias") != std::string::npos) {
      EXPECT_EQ(p.abs().max().item<double>(), 0.0) << name;
    } else {
      EXPECT_NEAR(p.std().item<double>(), 0.02, 0.004) << name;
    }
  }
  EXPECT_FALSE(at::equal(logits(model, in), base));
}

// Records the input and output of the module it stands in for.
class Recorder : public torch::nn::Module, public peft4j::models::TensorModule {
 public:
  explicit Recorder(std::shared_ptr<torch::nn::Module> inner) : inner_(std::move(inner)) {}
  at::Tensor forward(const at::Tensor& x) override {
    input = x;
    output = peft4j::models::forward_module(*inner_, x);
    return output;
  }
  torch::nn::Module& inner() { return *inner_; }
  at::Tensor input, output;

 private:
  std::shared_ptr<torch::nn::Module> inner_;
};

std::shared_ptr<Recorder> record(PeftModel& model, const std::string& path) {
  auto [parent, child] = peft4j::tuners::parent_of(model.base_model(), path);
  auto recorder = std::make_shared<Recorder>(peft4j::tuners::module_at(model.base_model(), path));
  parent->replace_module(child, recorder);
  return recorder;
}

struct Placement {
  std::string family;
  std::string attention;  // the adapted self-attention of layer 1
  std::string reads;      // a projection reading the attention input
  std::string output;     // the output projection, reading the merged heads
};

// With layer 0 left out, layer 1's attention input is the same with and without the adapter. The merged heads
// reaching the output projection then differ by exactly concat_i Δh_i, recomputed head by head with plain matmuls
// from the registered tensors and the recorded attention input, and the attention output by that term through the
// output projection without its bias.
TEST(MhParallelAdapter, TermBeforeTheOutputProjectionRecomputedPerHead) {
  const std::vector<Placement> placements = {
      {"llama", "model.layers.1.self_attn", "q_proj", "model.layers.1.self_attn.o_proj"},
      {"gpt2", "transformer.h.1.attn", "c_attn", "transformer.h.1.attn.c_proj"},
      {"bert", "bert.encoder.layer.1.attention.self", "query", "bert.encoder.layer.1.attention.output.dense"},
      {"t5", "encoder.block.1.layer.0.SelfAttention", "q", "encoder.block.1.layer.0.SelfAttention.o"}};
  const double s = 2.5;
  for (const auto& p : placements) {
    const Shape shape = shape_of(p.family);
    const int64_t r = 3;
    PeftModel model(tiny(p.family));
    model.add_adapter("default", config({{"bottleneck_size", r}, {"non_linearity", "tanh"}, {"scaling", s},
                                         {"leave_out", {0}}}));
    perturb(model);
    auto in = inputs_for(p.family);
    auto reads = record(model, p.attention + "." + p.reads);
    auto output = record(model, p.output);
    logits(model, in);
    at::Tensor x = reads->input, heads = output->input, out = output->output;
    model.set_disabled(true);
    logits(model, in);
    model.set_disabled(false);
    ASSERT_TRUE(at::equal(reads->input, x)) << p.family << ": layer 1's attention input changed";

    auto params = peft4j::tuners::module_at(model.base_model(), p.attention)->named_parameters(true);
    const std::string prefix = "mh_adapters.default.";
    at::Tensor w_down = params[prefix + "adapter_down.weight"], b_down = params[prefix + "adapter_down.bias"];
    at::Tensor w_up = params[prefix + "adapter_up.weight"], b_up = params[prefix + "adapter_up.bias"];
    ASSERT_EQ(w_down.sizes(), (std::vector<int64_t>{shape.heads * r, shape.d})) << p.family;
    ASSERT_EQ(w_up.sizes(), (std::vector<int64_t>{shape.heads, shape.head_dim, r})) << p.family;
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> per_head;
    for (int64_t i = 0; i < shape.heads; ++i) {
      at::Tensor down_i = w_down.slice(0, i * r, (i + 1) * r), bias_i = b_down.slice(0, i * r, (i + 1) * r);
      at::Tensor hidden = at::tanh(at::matmul(x, down_i.t()) + bias_i);
      per_head.push_back(s * (at::matmul(hidden, w_up[i].t()) + b_up[i]));
    }
    at::Tensor delta = at::cat(per_head, -1);
    EXPECT_TRUE(at::allclose(heads - output->input, delta, 1e-5, 1e-5))
        << p.family << ": max error " << (heads - output->input - delta).abs().max().item<double>();
    auto& projection = output->inner();
    at::Tensor through = peft4j::models::forward_module(projection, delta) -
                         peft4j::models::forward_module(projection, at::zeros_like(delta));
    EXPECT_TRUE(at::allclose(out - output->output, through, 1e-5, 1e-5)) << p.family;
    EXPECT_GT(delta.abs().max().item<double>(), 1e-3) << p.family << ": the check needs a non-zero term";
  }
}

TEST(MhParallelAdapter, LearnsTheTinyTask) {
  for (const std::string family : {"llama", "gpt2"}) {
    PeftModel model(tiny_model(family));
    model.add_adapter("default", config({{"bottleneck_size", 4}}));
    expect_learns(model, "MH_PARALLEL_ADAPTER " + family);
  }
}

std::string attention_key(int64_t layer, const std::string& tensor) {
  return "base_model.model.model.layers." + std::to_string(layer) + ".self_attn.mh_adapters." + tensor;
}

TEST(MhParallelAdapter, SavesKeysPerAttentionAndLoadsIdentically) {
  PeftModel model(tiny_model("llama"));
  model.add_adapter("default", config({{"bottleneck_size", 3}, {"scaling", "learned"}, {"leave_out", {0}}}));
  perturb(model);
  auto in = permutation_batch(4, 8, 11);
  at::Tensor adapted = logits(model, in);
  std::string dir = golden_testing::temp_dir("mh_parallel_save");
  model.save_adapter(dir, "default");

  auto saved = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [key, t] : saved) shapes[key] = t.sizes().vec();
  const Shape s = shape_of("llama");
  EXPECT_EQ(shapes, (std::map<std::string, std::vector<int64_t>>{
                        {attention_key(1, "adapter_down.weight"), {s.heads * 3, s.d}},
                        {attention_key(1, "adapter_down.bias"), {s.heads * 3}},
                        {attention_key(1, "adapter_up.weight"), {s.heads, s.head_dim, 3}},
                        {attention_key(1, "adapter_up.bias"), {s.heads, s.head_dim}},
                        {attention_key(1, "adapter_scaling"), {1}}}));
  auto saved_config = peft4j::tuners::read_adapter_config(dir);
  EXPECT_EQ(saved_config["peft_type"], kType);
  EXPECT_EQ(saved_config["scaling"], "learned");

  PeftModel fresh(tiny_model("llama"));
  fresh.load_adapter(dir, "default");
  EXPECT_TRUE(at::equal(logits(fresh, in), adapted));
}

TEST(MhParallelAdapter, MalformedFileIsAFormatErrorAndLeavesTheModelAsBefore) {
  PeftModel model(tiny_model("llama"));
  model.add_adapter("default", config({{"bottleneck_size", 3}}));
  perturb(model);
  std::string dir = golden_testing::temp_dir("mh_parallel_good");
  model.save_adapter(dir, "default");
  auto tensors = peft4j::io::read_safetensors(dir + "/adapter_model.safetensors");
  const std::string bad_key = attention_key(1, "adapter_up.weight");
  tensors[bad_key] = at::zeros({2, 2});
  std::string bad = golden_testing::temp_dir("mh_parallel_bad");
  model.save_adapter(bad, "default");
  peft4j::io::write_safetensors(bad + "/adapter_model.safetensors", tensors, {{"format", "pt"}});

  auto in = permutation_batch(4, 8, 11);
  PeftModel fresh(tiny_model("llama"));
  at::Tensor base = logits(fresh, in);
  const int64_t base_tensors = fresh.named_parameters(true).size();
  expect_error([&] { fresh.load_adapter(bad, "bad"); }, ErrorKind::Format, bad_key);
  EXPECT_TRUE(fresh.adapter_names().empty());
  EXPECT_EQ(static_cast<int64_t>(fresh.named_parameters(true).size()), base_tensors);
  for (const auto& item : fresh.named_modules("", false)) EXPECT_EQ(item.key().find("mh_adapters"), std::string::npos) << item.key();
  EXPECT_TRUE(at::equal(logits(fresh, in), base));

  fresh.load_adapter(dir, "default");
  at::Tensor good = logits(fresh, in);
  expect_error([&] { fresh.load_adapter(bad, "bad"); }, ErrorKind::Format, "shape");
  EXPECT_EQ(fresh.adapter_names(), std::vector<std::string>{"default"});
  for (const auto& item : fresh.named_parameters(true)) EXPECT_EQ(item.key().find(".bad."), std::string::npos) << item.key();
  EXPECT_TRUE(at::equal(logits(fresh, in), good));
}

// Several adapters share the attention modules' "mh_adapters"; deleting the last one removes it and its hooks.
TEST(MhParallelAdapter, AdaptersCoexistAndDeletingTheLastRemovesEverything) {
  PeftModel model(tiny_model("gpt2"));
  auto in = permutation_batch(4, 8, 11);
  at::Tensor base = logits(model, in);
  const int64_t base_tensors = model.named_parameters(true).size();
  model.add_adapter("a", config({{"bottleneck_size", 2}}));
  model.add_adapter("b", config({{"bottleneck_size", 5}}));
  model.set_adapter("a");
  perturb(model);
  at::Tensor a = logits(model, in);
  model.set_adapter("b");
  perturb(model);
  at::Tensor b = logits(model, in);
  EXPECT_FALSE(at::allclose(a, b, 1e-4, 1e-4));
  model.set_active_adapters({"a", "b"});
  at::Tensor both = logits(model, in);
  EXPECT_FALSE(at::allclose(both, a, 1e-4, 1e-4));
  model.delete_adapter("b");
  model.set_adapter("a");
  EXPECT_TRUE(at::equal(logits(model, in), a));
  model.delete_adapter("a");
  EXPECT_EQ(static_cast<int64_t>(model.named_parameters(true).size()), base_tensors);
  for (const auto& item : model.named_modules("", false)) EXPECT_EQ(item.key().find("mh_adapters"), std::string::npos) << item.key();
  EXPECT_TRUE(at::equal(logits(model, in), base));
}

// The term reads only the current tokens, so a KV cache extends it token by token: greedy generation with the cache
// gives the tokens greedy argmax over full forwards gives.
TEST(MhParallelAdapter, GreedyGenerationWithCacheEqualsFullForwards) {
  PeftModel model(tiny_model("llama"));
  model.add_adapter("default", config({{"bottleneck_size", 4}}));
  perturb(model, 1.0);
  at::Tensor ids = permutation_batch(2, 5, 3).input_ids;
  peft4j::models::GenerationConfig generation;
  generation.max_new_tokens = 4;
  at::Tensor cached = peft4j::models::generate(model, ids, at::Tensor(), generation);
  for (int step = 0; step < 4; ++step) {
    peft4j::models::ModelInputs in;
    in.input_ids = ids;
    at::Tensor next = logits(model, in).select(1, ids.size(1) - 1).argmax(-1, true);
    ids = at::cat({ids, next}, 1);
  }
  EXPECT_TRUE(at::equal(cached, ids)) << cached << ids;
}

TEST(MhParallelAdapter, RefusesMergeAndBadConfigs) {
  PeftModel model(tiny_model("llama"));
  model.add_adapter("default", config());
  expect_error([&] { model.merge(); }, ErrorKind::Unsupported, kType);

  PeftModel fresh(tiny_model("llama"));
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {{{"bottleneck_size", 0}}, "'bottleneck_size'"},
      {{{"bottleneck_size", "8"}}, "'bottleneck_size'"},
      {{{"scaling", "channel"}}, "'scaling'"},
      {{{"init_weights", "houlsby"}}, "'init_weights'"},
      {{{"dropout", 1.0}}, "'dropout'"},
      {{{"leave_out", 0}}, "'leave_out'"},
      {{{"leave_out", {2}}}, "'leave_out'"},
      {{{"leave_out", {0, 1}}}, "leaves no layer"}};
  for (const auto& [fields, text] : bad)
    expect_error([&] { fresh.add_adapter("a", config(fields)); }, ErrorKind::InvalidArgument, text);
  expect_error([&] { fresh.add_adapter("a", config({{"non_linearity", "no_such_activation"}})); },
               ErrorKind::Unsupported, "'non_linearity'");
  EXPECT_TRUE(fresh.adapter_names().empty());
}

}  // namespace
