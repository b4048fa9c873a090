// Private to the facade's .cpp files: the state behind TensorHandle and TensorMapHandle, and Access, the one
// friend that reaches it. JavaCPP never parses this header, so torch types may appear here.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft4j/error.h"
#include "model_api.h"
#include "peft4j/models/generation.h"
#include "peft4j/models/model.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j_api.h"

namespace peft4j::tuners {
class PeftModel;
}

namespace peft4j::api {

struct TensorState {
  at::Tensor tensor;
};

struct TensorMapState {
  io::TensorMap tensors;
  io::Metadata metadata;
};

struct ModelState {
  std::shared_ptr<models::Model> model;
  models::GenerationConfig generation_defaults;
  // The PeftModel that last wrapped this base model in place, kept after its handles close: its adapter layers stay
  // in the base (PeftModelHandle::wrap refuses a second one over them). Empty until wrapped, and after unloading.
  std::shared_ptr<tuners::PeftModel> carrier;
};

struct Access {
  static TensorHandle wrap(at::Tensor t) {
    TensorHandle h;
    h.state_ = std::make_shared<TensorState>(TensorState{std::move(t)});
    return h;
  }
  static const at::Tensor& tensor(const TensorHandle& h) {
    if (!h.state_) fail(ErrorKind::InvalidArgument, "tensor handle is empty (closed or never set)");
    return h.state_->tensor;
  }
  // An empty handle stands for an absent optional input (Java's null): an undefined tensor.
  static at::Tensor optional_tensor(const TensorHandle& h) { return h.state_ ? h.state_->tensor : at::Tensor(); }
  static TensorMapState& map(const TensorMapHandle& h) { return *h.state_; }
  static ModelHandle wrap_model(std::shared_ptr<ModelState> state) {
    ModelHandle h;
    h.state_ = std::move(state);
    return h;
  }
  static ModelState& model(const ModelHandle& h) { return *model_state(h); }
  static const std::shared_ptr<ModelState>& model_state(const ModelHandle& h) {
    if (!h.state_) fail(ErrorKind::InvalidArgument, "model handle is empty (closed or never loaded)");
    return h.state_;
  }
};

// PeftModelHandle::addAdapter with a seed (peft_api.cpp), shared by the form with data (train_api.cpp): libtorch's
// generators seeded under a lock, then the adapter added (PeftModel::add_adapter's `data`).
void add_seeded_adapter(tuners::PeftModel& model, const std::string& name, const std::string& configJson, int64_t seed,
                        const std::vector<models::ModelInputs>& data);

}  // namespace peft4j::api
