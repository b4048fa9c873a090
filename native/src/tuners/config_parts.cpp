#include "peft4j/tuners/config_parts.h"

#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

nlohmann::json config_part(const nlohmann::json& config, const std::string& field, const std::string& peft_type) {
  nlohmann::json out = config.at(field);
  out["peft_type"] = peft_type;
  return out;
}

nlohmann::json stored_part(nlohmann::json part) {
  for (const char* field : {"peft_type", "task_type", "base_model_name_or_path", "revision", "modules_to_save"})
    part.erase(field);
  return part;
}

std::vector<std::shared_ptr<torch::nn::Module>> inject_part(models::Model& model, const Tuner& tuner,
                                                            const std::vector<std::string>& targets,
                                                            InjectContext context) {
  std::vector<std::shared_ptr<torch::nn::Module>> layers;
  for (const auto& key : targets) {
    auto [parent, child] = parent_of(model, key);
    auto target = module_at(model, key);
    context.key = key;
    auto replacement = tuner.inject(target, context);
    if (replacement != target) parent->replace_module(child, replacement);
    layers.push_back(replacement);
  }
  return layers;
}

}  // namespace peft4j::tuners
