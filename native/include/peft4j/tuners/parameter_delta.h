// Methods that change weights rather than hidden states (DESIGN.md): diff pruning, PaFi, HiWi, PST and intrinsic
// dimension (DID/SAID). An adapter is a trainable difference to parameters of the targeted modules — sparse, projected
// from one shared low-dimensional vector, or made by a small network from the parameter itself — with masks or
// projections that the training hooks update. Merging writes the adapted parameters into the model, which then runs at
// the base model's cost; a saved adapter holds only what the method needs to rebuild them.
//
// What they share lives here. ParameterDeltaLayer wraps a Linear, GPT-2 Conv1D or Embedding and runs that module's
// own operation with the parameters each active adapter makes of the current ones (θ₀ first), so several adapters,
// disabling, mixed batches (a row runs with its adapter's parameters) and merging (undone exactly by unmerge) work
// alike for all of them. ParameterDeltaTuner records a fingerprint of every base parameter an adapter changes in its
// config (`base_fingerprints`), so that loading it into another base model is refused by the parameter's name.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft4j/tuners/config.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class ParameterDeltaLayer : public AdapterLayer {
 public:
  // `method` names the peft_type in errors; the module must be a Linear, Conv1D or Embedding.
  ParameterDeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                      const std::string& method);

  bool can_merge() const override { return true; }
  // The wrapped module's parameter "weight" or "bias" as stored (Linear [out, in], Conv1D [in, out], Embedding
  // [num, dim]); undefined when the module has none.
  at::Tensor base_parameter(const std::string& name) const;
  // The value `adapter` gives parameter `name` when it currently holds `value` (θ₀, or what earlier active adapters
  // made of it); `value` itself for a parameter the adapter leaves alone.
  virtual at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) = 0;
  // The module's output with `adapter`'s parameters (the running result is not needed: the whole output changes).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  // The wrapped module's operation with these parameters (bias may be undefined).
  at::Tensor run(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;

 private:
  at::Tensor adapted_parameter(const std::string& name);
  std::map<std::string, std::map<std::string, at::Tensor>> before_merge_;  // merged adapter -> parameter -> old value
};

// The module a target path names, looked through an adapter layer to the module it wraps.
const torch::nn::Module& unwrapped_module(models::Model& model, const std::string& path);

// Fills config["base_fingerprints"] ({parameter path: fingerprint}) for the targets of `config` when it is null, or
// checks that the model's parameters have the recorded ones (Error(InvalidArgument) naming the first parameter that
// differs, is missing or is new).
nlohmann::json base_fingerprints(const nlohmann::json& config, models::Model& model,
                                 const std::function<bool(const torch::nn::Module&)>& wrappable,
                                 const std::function<std::vector<std::string>(const torch::nn::Module&)>& parameters);

// The Tuner of a method built on ParameterDeltaLayer: WrappingTuner's injection plus the base fingerprints.
template <typename Layer>
class ParameterDeltaTuner : public WrappingTuner<Layer> {
 public:
  using WrappingTuner<Layer>::WrappingTuner;

  // Records the fingerprint of every parameter the adapter changes (a new adapter), or checks them (a loaded one).
  nlohmann::json resolve_for_model(const nlohmann::json& config, models::Model& model) const override {
    return base_fingerprints(config, model, [&](const torch::nn::Module& m) { return this->can_wrap(m); },
                             [&](const torch::nn::Module& m) { return adapted_parameters(config, m); });
  }

 protected:
  // The parameters of a targeted (unwrapped) module that the adapter changes: "weight" and/or "bias".
  virtual std::vector<std::string> adapted_parameters(const nlohmann::json& config,
                                                      const torch::nn::Module& module) const = 0;

  // The adapter's layers of this method, in module order.
  static std::vector<std::pair<std::string, Layer*>> layers_of(const NamedLayers& layers, const std::string& adapter) {
    std::vector<std::pair<std::string, Layer*>> out;
    for (const auto& [path, layer] : layers)
      if (auto* l = dynamic_cast<Layer*>(layer); l && l->has_adapter(adapter)) out.emplace_back(path, l);
    return out;
  }
};

// A fingerprint of a parameter's values: 16 hex digits of a 64-bit FNV-1a hash over its shape and its values rounded
// to bfloat16, so that f32 and bf16 copies of one checkpoint agree.
std::string parameter_fingerprint(const at::Tensor& value);

// The k entries with the smallest (or the largest) scores over several tensors, ties in the order a stable sort of
// all scores keeps (tensor order, then flat index): each tensor's chosen flat indices, increasing (int64). Scores must
// be finite and non-negative; the selection needs no copy of all scores at once (a threshold search over their bits).
std::vector<at::Tensor> select_entries(const std::vector<at::Tensor>& scores, int64_t k, bool smallest);

// A tensor of `shape` that holds `values` at the flat `indices` and zeros elsewhere.
at::Tensor scatter_entries(const at::Tensor& indices, const at::Tensor& values, at::IntArrayRef shape);

// "base_model.model.<path>.": how saved keys of a module-wrapping method begin.
std::string checkpoint_prefix(const std::string& path);

}  // namespace peft4j::tuners
