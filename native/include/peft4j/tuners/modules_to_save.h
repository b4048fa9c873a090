// PEFT's ModulesToSaveWrapper: a module (a classification head, say) trained in full for each adapter. The
// original stays as "original_module"; each adapter gets a copy under "modules_to_save.<adapter>".
#pragma once

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// A layer whose adapters are trained copies of the wrapped module; an adapter's copy replaces the module's output
// (PEFT's ModulesToSaveWrapper, LN tuning's layer).
class ModuleCopyLayer : public AdapterLayer {
 public:
  // The wrapped module is registered as `base_name`, the copies under `copies_name`.<adapter>.
  ModuleCopyLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                  const std::string& base_name, const std::string& copies_name);

  bool has_adapter(const std::string& adapter) const override { return copies_->contains(adapter); }
  // The adapter's copy run on x; the base output is not used.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

  // Adds an adapter: a trainable deep copy of the wrapped module as it is now (Error(Unsupported) when it cannot be
  // copied: libtorch clones modules built from its cloneable layers only).
  void add(const std::string& adapter);
  // Adds an adapter whose copy is `module` as given (a tied module's, sharing another copy's weight).
  void add(const std::string& adapter, std::shared_ptr<torch::nn::Module> module);
  std::shared_ptr<torch::nn::Module> copy(const std::string& adapter) const;

 protected:
  std::shared_ptr<AdapterDict> copies_;
};

class ModulesToSaveLayer : public ModuleCopyLayer {
 public:
  ModulesToSaveLayer(std::shared_ptr<torch::nn::Module> original, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "MODULES_TO_SAVE"; }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
};

}  // namespace peft4j::tuners
