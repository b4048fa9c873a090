#include "peft4j/tuners/target_check.h"

#include <vector>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

void require_wrappable_targets(const Tuner& tuner, const nlohmann::json& config, models::Model& model,
                               const std::string& supported) {
  std::vector<std::string> layer_paths;
  for (const auto& item : model.named_modules("", false))
    if (dynamic_cast<AdapterLayer*>(item.value().get())) layer_paths.push_back(item.key() + ".");
  for (const auto& key : find_target_modules(model, config, [](const torch::nn::Module&) { return true; })) {
    bool inside_layer = false;
    for (const auto& path : layer_paths)
      if (key.compare(0, path.size(), path) == 0) inside_layer = true;
    if (inside_layer) continue;
    auto module = module_at(model, key);
    if (tuner.can_wrap(*module) || dynamic_cast<AdapterLayer*>(module.get())) continue;
    const std::string what = dynamic_cast<models::Conv1DImpl*>(module.get()) ? "GPT-2's Conv1D" : module->name();
    fail(ErrorKind::Unsupported, tuner.peft_type() + " cannot wrap target module '" + key + "' (" + what +
                                     "): it wraps " + supported + " only");
  }
}

}  // namespace peft4j::tuners
