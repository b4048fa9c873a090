// LN tuning. Random state: none; each adapter starts as an exact copy of the module it wraps.
#include "peft4j/tuners/ln_tuning.h"

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's LNTuningConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {{"peft_type", "LN_TUNING"}, {"task_type", nullptr},
                                  {"base_model_name_or_path", nullptr}, {"revision", nullptr},
                                  {"inference_mode", false}, {"auto_mapping", nullptr},
                                  {"target_modules", nullptr}, {"exclude_modules", nullptr},
                                  {"modules_to_save", nullptr}};

// A module the models call with one tensor (forward_module), so a wrapper in its place takes effect.
bool callable(const torch::nn::Module& m) {
  return (dynamic_cast<const models::TensorModule*>(&m) && !dynamic_cast<const AdapterLayer*>(&m)) ||
         dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const torch::nn::EmbeddingImpl*>(&m) ||
         dynamic_cast<const torch::nn::LayerNormImpl*>(&m);
}

// PEFT copies whatever module is targeted; peft4j needs it to be one the model calls through its name (a norm, a
// projection), so anything else is refused by name rather than skipped. A new adapter is always an exact copy of the
// module, so every config is the identity.
class LnTuningTuner : public WrappingTuner<LnTuningLayer> {
 public:
  LnTuningTuner()
      : WrappingTuner({"LN_TUNING", kDefaults, 0, nlohmann::json::object(), true,
                       "norm layers and other single-tensor modules"}) {}

 protected:
  bool wraps(const torch::nn::Module& m) const override { return callable(m); }
  void validate(nlohmann::json& config) const override { config_strings(config, "target_modules"); }
  void add(LnTuningLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LnTuningTuner>());

}  // namespace

LnTuningLayer::LnTuningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ModuleCopyLayer(std::move(base), std::move(state), "base_layer", "ln_tuning_layers") {}

at::Tensor LnTuningLayer::adapted_forward(const at::Tensor& x) {
  const auto& active = state_->active;
  if (active.size() > 1)
    fail(ErrorKind::InvalidArgument, "LN_TUNING runs one adapter at a time, but " + std::to_string(active.size()) +
                                         " are active");
  if (active.empty() || !has_adapter(active[0])) return base_forward(x);
  return apply(x, at::Tensor(), active[0]);
}

void LnTuningLayer::merge(const std::vector<std::string>& adapters) {
  std::vector<std::string> todo;
  for (const auto& a : adapters)
    if (has_adapter(a) && !std::count(merged_.begin(), merged_.end(), a)) todo.push_back(a);
  if (todo.empty()) return;
  if (todo.size() > 1)
    fail(ErrorKind::InvalidArgument, "LN_TUNING merges one adapter at a time, but " + std::to_string(todo.size()) +
                                         " were given");
  if (!merged_.empty()) unmerge();
  merge_adapter(todo[0]);
  merged_.push_back(todo[0]);
}

void LnTuningLayer::swap(const std::string& adapter) {
  auto tuned = copy(adapter);
  auto original = base_layer();
  replace_module(base_name(), tuned);
  copies_->put_module(adapter, original);
}

void LnTuningLayer::merge_adapter(const std::string& adapter) { swap(adapter); }

void LnTuningLayer::unmerge_adapter(const std::string& adapter) { swap(adapter); }

}  // namespace peft4j::tuners
