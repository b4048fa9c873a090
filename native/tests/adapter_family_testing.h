// Tiny models built by the tests and a small synthetic task for the adapter family (bottleneck, Compacter,
// AdapterBias, BitFit, layer freezing): learn a fixed token permutation, x_{t+1} = π(x_t), which a randomly
// initialised frozen model does not know.
#pragma once

#include <gtest/gtest.h>

#include <torch/optim/adamw.h>

#include <string>

#include "golden_testing.h"
#include "peft4j/models/model.h"
#include "peft4j/tuners/peft_model.h"

namespace adapter_family_testing {

using peft4j::tuners::PeftModel;

constexpr int64_t kVocab = 32;
constexpr int64_t kHidden = 32;
constexpr int64_t kLayers = 2;

// A causal LM of the family ("llama" or "gpt2") with hidden 32, FFN 64, 2 layers, vocab 32; weights drawn as
// transformers initialises them (N(0, 0.02), norms at one, biases small) from a fixed seed.
inline std::shared_ptr<peft4j::models::Model> tiny_model(const std::string& family) {
  nlohmann::json config;
  if (family == "gpt2") {
    config = {{"model_type", "gpt2"}, {"vocab_size", kVocab}, {"n_embd", kHidden}, {"n_layer", kLayers},
              {"n_head", 4}, {"n_inner", 64}, {"n_positions", 64}, {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0},
              {"attn_pdrop", 0.0}, {"activation_function", "gelu_new"}, {"tie_word_embeddings", true}};
  } else {
    config = {{"model_type", family}, {"vocab_size", kVocab}, {"hidden_size", kHidden}, {"intermediate_size", 64},
              {"num_hidden_layers", kLayers}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"max_position_embeddings", 64}, {"tie_word_embeddings", false}};
  }
  auto model = peft4j::models::create_model(config);
  at::manual_seed(1234);
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(true)) {
    const std::string& key = p.key();
    bool norm = key.find("norm") != std::string::npos || key.find("ln_") != std::string::npos;
    if (norm && key.size() > 7 && key.compare(key.size() - 7, 7, ".weight") == 0)
      p.value().fill_(1.0);
    else if (key.size() > 5 && key.compare(key.size() - 5, 5, ".bias") == 0)
      p.value().normal_(0.0, 0.01);
    else
      p.value().normal_(0.0, 0.2);
  }
  return model;
}

// Rows of the permutation task: x_0 random, x_{t+1} = π(x_t), π a fixed permutation of the vocabulary.
inline peft4j::models::ModelInputs permutation_batch(int64_t rows, int64_t length, uint64_t seed) {
  at::manual_seed(7);
  at::Tensor pi = at::randperm(kVocab, at::TensorOptions().dtype(at::kLong));
  at::manual_seed(seed);
  at::Tensor ids = at::empty({rows, length}, at::TensorOptions().dtype(at::kLong));
  ids.select(1, 0).copy_(at::randint(kVocab, {rows}, at::TensorOptions().dtype(at::kLong)));
  for (int64_t t = 1; t < length; ++t) ids.select(1, t).copy_(pi.index_select(0, ids.select(1, t - 1)));
  peft4j::models::ModelInputs in;
  in.input_ids = ids;
  in.labels = ids;
  return in;
}

inline double loss(peft4j::models::Model& model, const peft4j::models::ModelInputs& in) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(in).loss.item<double>();
}

// `steps` AdamW steps on fresh training batches; returns the first and last training losses.
inline std::pair<double, double> train(PeftModel& model, int steps, double lr = 1e-2) {
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model.trainable_parameters()) params.push_back(p);
  EXPECT_FALSE(params.empty());
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(lr).weight_decay(0.0));
  model.train();
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    adamw.zero_grad();
    at::Tensor l = model.forward(permutation_batch(16, 12, 100 + step)).loss;
    if (step == 0) first = l.item<double>();
    last = l.item<double>();
    l.backward();
    adamw.step();
    model.after_optimizer_step(step + 1);
  }
  return {first, last};
}

// The method learns: 100 steps drop the training loss clearly, and the held-out loss (rows never trained on) ends
// below the untrained model's.
inline void expect_learns(PeftModel& model, const std::string& what, double lr = 1e-2) {
  auto held_out = permutation_batch(32, 12, 99999);
  double before = loss(model, held_out);
  auto [first, last] = train(model, 100, lr);
  double after = loss(model, held_out);
  EXPECT_LT(last, first * 0.8) << what << ": training loss " << first << " -> " << last;
  EXPECT_LT(after, before - 0.2) << what << ": held-out loss " << before << " -> " << after;
}

// The golden batch of an architecture's golden base model.
inline peft4j::models::ModelInputs golden_batch(const std::string& arch) {
  return golden_testing::batch(arch == "bert" ? "lora_bert_seqcls" : arch == "llama" ? "lora_llama_all" : "lora_" + arch);
}

// Trainable parameters of `model` whose name contains `part`.
inline int64_t count_named(PeftModel& model, const std::string& part) {
  int64_t n = 0;
  for (const auto& [name, p] : model.trainable_parameters())
    if (name.find(part) != std::string::npos) n += p.numel();
  return n;
}

}  // namespace adapter_family_testing
