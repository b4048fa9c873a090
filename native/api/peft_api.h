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
  // The same with calibration examples, each one batch, for methods that score the base model's parameters on data
  // when the adapter is made (PaFi's Fisher mask); defined in train_api.cpp.
  void addAdapter(const std::string& name, const std::string& configJson, int64_t seed,
                  const TrainingDataHandle& calibration);
  void loadAdapter(const std::string& dir, const std::string& name, bool trainable);
  void saveAdapter(const std::string& dir, const std::string& name) const;
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

}  // namespace api
}  // namespace peft4j
