// What every tuner test needs from the golden cases: their models and batches, logits in eval mode, snapshots of
// the base weights, temporary directories and error checks. Method-family helpers build on it.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <string>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"

namespace golden_testing {

using peft4j::tuners::PeftModel;

inline const std::string kGolden = std::string(PEFT4J_SOURCE_DIR) + "/python-parity/golden";

inline std::string case_dir(const std::string& name) { return kGolden + "/cases/" + name; }

// A PeftModel over the golden base model of an architecture ("llama", "gpt2", ...).
inline std::shared_ptr<PeftModel> peft(const std::string& arch) {
  return std::make_shared<PeftModel>(peft4j::models::load_model(kGolden + "/models/" + arch));
}

// The golden case's batch (every case of one architecture shares it), with its labels when asked.
inline peft4j::models::ModelInputs batch(const std::string& case_name, bool labels = false) {
  auto io = peft4j::io::read_safetensors(case_dir(case_name) + "/io.safetensors");
  peft4j::models::ModelInputs in;
  in.input_ids = io.at("input_ids");
  in.attention_mask = io.at("attention_mask");
  if (labels) in.labels = io.at("labels");
  return in;
}

inline at::Tensor logits(peft4j::models::Model& model, const peft4j::models::ModelInputs& in) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(in).logits;
}

inline std::map<std::string, at::Tensor> base_weights(PeftModel& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : model.base_model().named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

inline std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "peft4j_test_" + std::to_string(::getpid()) + "_" + name;
}

// `body` throws a peft4j::Error of `kind` whose message mentions `text`.
inline void expect_error(const std::function<void()>& body, peft4j::ErrorKind kind, const std::string& text) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning '" << text << "'";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

}  // namespace golden_testing
