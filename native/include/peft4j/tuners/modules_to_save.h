// PEFT's ModulesToSaveWrapper: a module (a classification head, say) trained in full for each adapter. The
// original stays as "original_module"; each adapter gets a copy under "modules_to_save.<adapter>".
#pragma once

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class ModulesToSaveLayer : public AdapterLayer {
 public:
  ModulesToSaveLayer(std::shared_ptr<torch::nn::Module> original, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "MODULES_TO_SAVE"; }
  bool has_adapter(const std::string& adapter) const override { return copies_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  // A trainable copy of the original module for `adapter`.
  void add(const std::string& adapter);
  std::shared_ptr<torch::nn::Module> copy(const std::string& adapter) const;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;

 private:
  std::shared_ptr<AdapterDict> copies_;
};

}  // namespace peft4j::tuners
