#include "peft_api.h"

#include <mutex>
#include <sstream>

#include "access.h"
#include "guard.h"
#include "inputs.h"
#include "peft4j/tuners/composition.h"
#include "peft4j/tuners/lora_init.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::api {

struct PeftState {
  std::shared_ptr<tuners::PeftModel> model;
  std::shared_ptr<ModelState> base;  // the wrapped base model's state, which records this model as its carrier
};

namespace {
tuners::PeftModel& peft_of(const std::shared_ptr<PeftState>& state) {
  if (!state || !state->model) fail(ErrorKind::InvalidArgument, "PEFT model handle is empty (closed, unloaded or never made)");
  return *state->model;
}

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> names;
  std::stringstream in(list);
  for (std::string n; std::getline(in, n, ',');)
    if (!n.empty()) names.push_back(n);
  return names;
}

// The batch of forwardParallel / forwardMixed on the model's device, its ids and mask checked by name.
models::ModelInputs batch_of(tuners::PeftModel& model, const TensorHandle& inputIds, const TensorHandle& attentionMask) {
  const at::Device device = model.base_model().parameters().at(0).device();
  models::ModelInputs inputs;
  inputs.input_ids = token_ids(inputIds, "input_ids", model.vocab_size(), device, /*required=*/true);
  inputs.attention_mask = attention_mask(attentionMask, device);
  return inputs;
}

nlohmann::json parse_adapter_config(const std::string& configJson) {
  try {
    return nlohmann::json::parse(configJson);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number such as 1e999
    fail(ErrorKind::InvalidArgument, std::string("adapter config is not valid JSON: ") + e.what());
  }
}
}  // namespace

PeftModelHandle::PeftModelHandle() = default;

PeftModelHandle PeftModelHandle::wrap(const ModelHandle& base) {
  return guard([&] {
    std::shared_ptr<ModelState> model = Access::model_state(base);
    if (dynamic_cast<tuners::PeftModel*>(model->model.get()))
      fail(ErrorKind::InvalidArgument, "this model already is a PEFT model");
    // Wrapping adapts the base in place, and the adapter layers stay there after their PeftModel is gone; a second
    // PeftModel over them would find its target modules wrapped. An earlier PeftModel without adapters (one whose
    // first adapter was refused, or after merge_and_unload) left the base as it was.
    if (model->carrier && !model->carrier->adapter_names().empty()) {
      std::string names;
      for (const auto& name : model->carrier->adapter_names()) names += (names.empty() ? "'" : ", '") + name + "'";
      fail(ErrorKind::InvalidArgument, "the base model already carries a PeftModel (adapters " + names +
                                           "), which adapted it in place: add further adapters to that PeftModel, "
                                           "or load the base model again");
    }
    model->carrier = std::make_shared<tuners::PeftModel>(model->model);
    PeftModelHandle h;
    h.state_ = std::make_shared<PeftState>(PeftState{model->carrier, model});
    return h;
  });
}

ModelHandle PeftModelHandle::model() const {
  return guard([&] {
    auto state = std::make_shared<ModelState>();
    state->model = state_->model;
    peft_of(state_);
    state->generation_defaults = state_->base->generation_defaults;
    return Access::wrap_model(state);
  });
}

void PeftModelHandle::addAdapter(const std::string& name, const std::string& configJson) {
  guard([&] { peft_of(state_).add_adapter(name, parse_adapter_config(configJson)); });
}

void add_seeded_adapter(tuners::PeftModel& model, const std::string& name, const std::string& configJson, int64_t seed,
                        const std::vector<models::ModelInputs>& data) {
  if (seed < 0) fail(ErrorKind::InvalidArgument, "seed must be >= 0, got " + std::to_string(seed));
  nlohmann::json config = parse_adapter_config(configJson);
  // Seeded creations in two threads would otherwise interleave their draws.
  static std::mutex seeding;
  std::lock_guard<std::mutex> lock(seeding);
  at::manual_seed(static_cast<uint64_t>(seed));
  model.add_adapter(name, config, data);
}

void PeftModelHandle::addAdapter(const std::string& name, const std::string& configJson, int64_t seed) {
  guard([&] { add_seeded_adapter(peft_of(state_), name, configJson, seed, {}); });
}

void PeftModelHandle::loadAdapter(const std::string& dir, const std::string& name, bool trainable) {
  guard([&] { peft_of(state_).load_adapter(dir, name, trainable); });
}

void PeftModelHandle::saveAdapter(const std::string& dir, const std::string& name) const {
  guard([&] { peft_of(state_).save_adapter(dir, name); });
}

void PeftModelHandle::saveAdapter(const std::string& dir, const std::string& name,
                                  const std::string& pathInitialModelForWeightConversion) const {
  guard([&] { tuners::save_converted_adapter(peft_of(state_), dir, name, pathInitialModelForWeightConversion); });
}

void PeftModelHandle::setAdapter(const std::string& name) { guard([&] { peft_of(state_).set_adapter(name); }); }
void PeftModelHandle::setActiveAdapters(const std::string& names) {
  guard([&] { peft_of(state_).set_active_adapters(split_names(names)); });
}
void PeftModelHandle::deleteAdapter(const std::string& name) { guard([&] { peft_of(state_).delete_adapter(name); }); }
void PeftModelHandle::setDisabled(bool disabled) { guard([&] { peft_of(state_).set_disabled(disabled); }); }
bool PeftModelHandle::disabled() const { return guard([&] { return peft_of(state_).disabled(); }); }
int64_t PeftModelHandle::adapterCount() const {
  return guard([&] { return static_cast<int64_t>(peft_of(state_).adapter_names().size()); });
}
std::string PeftModelHandle::adapterName(int64_t index) const {
  return guard([&] {
    auto names = peft_of(state_).adapter_names();
    if (index < 0 || index >= static_cast<int64_t>(names.size()))
      fail(ErrorKind::InvalidArgument, "adapter index " + std::to_string(index) + " out of range");
    return names[index];
  });
}
std::string PeftModelHandle::activeAdapter() const {
  return guard([&] {
    const auto& active = peft_of(state_).active_adapters();
    return active.empty() ? std::string() : active.front();
  });
}
std::string PeftModelHandle::adapterConfig(const std::string& name) const {
  return guard([&] { return peft_of(state_).adapter_config(name).dump(2); });
}
int64_t PeftModelHandle::trainableParameterCount() const {
  return guard([&] { return peft_of(state_).trainable_parameter_count(); });
}
void PeftModelHandle::merge() { guard([&] { peft_of(state_).merge(); }); }
void PeftModelHandle::unmerge() { guard([&] { peft_of(state_).unmerge(); }); }

ModelHandle PeftModelHandle::mergeAndUnload() {
  return guard([&] {
    peft_of(state_).merge_and_unload();
    // The base is plain again and may be wrapped anew; the returned handle shares its state with the base's.
    state_->base->carrier.reset();
    state_->model.reset();  // the adapters are gone; this handle is spent
    return Access::wrap_model(state_->base);
  });
}

void PeftModelHandle::addWeightedAdapter(const std::string& adapters, const double* weights, int count,
                                         const std::string& name, const std::string& combinationType, int64_t svdRank) {
  guard([&] {
    std::vector<std::string> names = split_names(adapters);
    if (count < 0 || (count > 0 && !weights)) fail(ErrorKind::InvalidArgument, "weights are missing");
    peft_of(state_).add_weighted_adapter(names, std::vector<double>(weights, weights + count), name, combinationType,
                                         svdRank);
  });
}

TensorHandle PeftModelHandle::forwardParallel(const std::string& adapters, const TensorHandle& inputIds,
                                              const TensorHandle& attentionMask) const {
  return guard([&] {
    tuners::PeftModel& model = peft_of(state_);
    models::ModelInputs inputs = batch_of(model, inputIds, attentionMask);
    at::NoGradGuard no_grad;
    return Access::wrap(tuners::forward_parallel(model, inputs, split_names(adapters)).logits);
  });
}

TensorHandle PeftModelHandle::forwardMixed(const std::string& rowAdapters, const TensorHandle& inputIds,
                                           const TensorHandle& attentionMask) const {
  return guard([&] {
    tuners::PeftModel& model = peft_of(state_);
    models::ModelInputs inputs = batch_of(model, inputIds, attentionMask);
    at::NoGradGuard no_grad;
    return Access::wrap(model.forward_mixed(inputs, split_names(rowAdapters)).logits);
  });
}

namespace {
bool lora_with(const std::string& configJson, bool (*test)(const nlohmann::json&)) {
  nlohmann::json config = parse_adapter_config(configJson);
  if (!config.is_object() || config.value("peft_type", std::string()) != "LORA" || !config.contains("init_lora_weights"))
    return false;
  return test(config);
}
}  // namespace

bool initNeedsData(const std::string& configJson) {
  return guard([&] { return lora_with(configJson, tuners::init_needs_data); });
}

bool initMutatesBase(const std::string& configJson) {
  return guard([&] { return lora_with(configJson, tuners::init_mutates_base); });
}

}  // namespace peft4j::api
