// The facade over PeftModel (peft4j/tuners/peft_model.h): adapters of any registered method on a base model,
// in PEFT's formats. Torch-free like peft4j_api.h; configs cross as PEFT's adapter_config.json text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model_api.h"

namespace peft4j {
namespace api {

struct PeftState;
class TrainingDataHandle;

class PeftModelHandle {
 public:
  PeftModelHandle();
  // Adapts `base` in place, as PEFT's get_peft_model does: the base model's target modules get wrapped, so
  // every handle of that model sees the adapters from now on.
  static PeftModelHandle wrap(const ModelHandle& base);
  // Inference through the adapters: forward and generate of the adapted model.
  ModelHandle model() const;

  // `configJson` is an adapter_config.json (peft_type + PEFT's field names). The new weights draw from libtorch's
  // global generators as they stand (as PEFT's get_peft_model draws from torch's).
  void addAdapter(const std::string& name, const std::string& configJson);
  // The same, libtorch's generators first seeded with `seed` (>= 0; transformers' set_seed): one seed gives
  // bitwise the same adapter, as long as no other thread draws random numbers meanwhile.
  void addAdapter(const std::string& name, const std::string& configJson, int64_t seed);
  // The same for methods made from data (LoRA's init_lora_weights "corda", "eva", "lora_ga"; PaFi's Fisher mask): the
  // base model first runs over `data`, each example cut to `maxLength` tokens, collated `batchSize` at a time
  // (right-padded with `padTokenId`); defined in train_api.cpp.
  void addAdapter(const std::string& name, const std::string& configJson, int64_t seed, const TrainingDataHandle& data,
                  int64_t batchSize, int64_t maxLength, int64_t padTokenId);
  void loadAdapter(const std::string& dir, const std::string& name, bool trainable);
  void saveAdapter(const std::string& dir, const std::string& name) const;
  // PEFT's save_pretrained(dir, path_initial_model_for_weight_conversion=...) for an adapter whose init moved part of
  // the base weight into it (PiSSA, OLoRA, CorDA, LoRA-GA): `pathInitialModelForWeightConversion` holds the adapter
  // saved right after its initialisation; `dir` gets a plain LoRA of rank 2r for the untouched base model.
  void saveAdapter(const std::string& dir, const std::string& name, const std::string& pathInitialModelForWeightConversion) const;
  void setAdapter(const std::string& name);
  // Several adapters active at once (comma-separated, in order), as PEFT's base_model.set_adapter([...]); unlike
  // setAdapter it leaves which tensors train as it is.
  void setActiveAdapters(const std::string& names);
  void deleteAdapter(const std::string& name);
  void setDisabled(bool disabled);
  bool disabled() const;
  int64_t adapterCount() const;
  std::string adapterName(int64_t index) const;
  std::string activeAdapter() const;  // the first active adapter, empty when none
  std::string adapterConfig(const std::string& name) const;
  int64_t trainableParameterCount() const;
  void merge();
  void unmerge();
  // Merges the active adapter, removes every adapter layer and returns the plain base model.
  ModelHandle mergeAndUnload();
  // PEFT's add_weighted_adapter: `adapters` is a comma-separated list with one weight each.
  void addWeightedAdapter(const std::string& adapters, const double* weights, int count, const std::string& name,
                          const std::string& combinationType, int64_t svdRank);
  // AdapterHub's Parallel block: the batch once per adapter of `adapters` (comma-separated), copy j through adapter
  // j; the logits of the n·B rows, adapter by adapter. `attentionMask` may be empty.
  TensorHandle forwardParallel(const std::string& adapters, const TensorHandle& inputIds,
                               const TensorHandle& attentionMask) const;
  // PEFT's mixed batch (forward with adapter_names): row i through adapter rowAdapters[i] (comma-separated, one
  // per row; "__base__" for none); the logits. `attentionMask` may be empty.
  TensorHandle forwardMixed(const std::string& rowAdapters, const TensorHandle& inputIds,
                            const TensorHandle& attentionMask) const;

 private:
  std::shared_ptr<PeftState> state_;
};

// What LoRA's init_lora_weights in `configJson` (an adapter_config.json) asks of a training run: data to initialise
// from ("corda", "eva", "lora_ga"), and whether it leaves a residual base model ("pissa", "pissa_niter_K", "olora",
// "corda", "lora_ga"). False for every other config.
bool initNeedsData(const std::string& configJson);
bool initMutatesBase(const std::string& configJson);

}  // namespace api
}  // namespace peft4j
