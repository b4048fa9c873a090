// The facade over the base models (peft4j/models/model.h): load an HF directory, run forward, loss and
// generation. Torch-free like peft4j_api.h, whose conventions it follows: handles around shared state, every
// call guarded, errors as "KIND: message". Tensors cross as TensorHandle; an empty handle (TensorHandle())
// stands for an input that is not given.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "peft4j_api.h"

namespace peft4j {
namespace api {

struct ModelState;

// The options of ModelHandle::generate: peft4j::models::GenerationConfig (peft4j/models/generation.h) field for
// field, with its defaults, except that eos and pad ids default to the model's own.
class GenerationOptions {
 public:
  GenerationOptions();
  int64_t maxNewTokens;
  bool doSample;
  double temperature;
  int64_t topK;
  double topP;
  double repetitionPenalty;
  // false: the model's eos_token_id (generation_config.json, else config.json); true: exactly the ids passed
  // to generate(), where none means that rows never stop early.
  bool eosTokenIdsGiven;
  // false: the model's pad_token_id, else the first eos id; true: padTokenId.
  bool padTokenIdGiven;
  int64_t padTokenId;
  // Sampling draws from a generator seeded with it (as an unsigned 64-bit value).
  int64_t seed;
};

// What one forward call returns: the logits and, when labels were given, the loss (a scalar).
class ModelOutputHandle {
 public:
  ModelOutputHandle();
  TensorHandle logits() const;
  bool hasLoss() const;
  TensorHandle loss() const;

 private:
  TensorHandle logits_;
  TensorHandle loss_;
  friend class ModelHandle;
};

// A base model loaded from an HF directory, in eval mode, on CPU in f32. Copies of the handle share the
// model. Every call runs without gradients.
class ModelHandle {
 public:
  ModelHandle();
  // Reads config.json and the weights (model.safetensors or a sharded index) of `dir`; the generation defaults
  // come from generation_config.json when present, else from config.json.
  static ModelHandle load(const std::string& dir);
  std::string modelType() const;
  // Distinct parameters' elements: a tied LM head counts once.
  int64_t parameterCount() const;
  // inputIds [batch, length] is required; every other tensor may be empty. Integer inputs of any integer
  // dtype are converted to int64; labels may also be floating point (regression heads).
  ModelOutputHandle forward(const TensorHandle& inputIds, const TensorHandle& attentionMask,
                            const TensorHandle& tokenTypeIds, const TensorHandle& positionIds,
                            const TensorHandle& labels, const TensorHandle& decoderInputIds) const;
  // peft4j::models::generate: [batch, length + new] for causal LMs, the decoder sequence for seq2seq LMs.
  // `eosTokenIds` (`eosCount` ids) is read only when options.eosTokenIdsGiven.
  TensorHandle generate(const TensorHandle& inputIds, const TensorHandle& attentionMask,
                        const GenerationOptions& options, const int64_t* eosTokenIds, int eosCount) const;
  // Writes config.json and model.safetensors into the existing directory `dir`, as save_pretrained does: tied and
  // recomputed tensors (a tied lm_head, rotary inv_freq) left out, each file written atomically.
  void save(const std::string& dir) const;

 private:
  std::shared_ptr<ModelState> state_;
  friend struct Access;
};

}  // namespace api
}  // namespace peft4j
