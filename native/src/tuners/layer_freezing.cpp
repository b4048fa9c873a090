// Layer freezing. Random state: none; every adapter starts as a copy of the modules it trains.
#include "peft4j/tuners/layer_freezing.h"

#include <map>
#include <regex>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"

namespace peft4j::tuners {

namespace {

const char* kType = "LAYER_FREEZING";

const nlohmann::json kDefaults = {{"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr},
                                  {"revision", nullptr}, {"inference_mode", false}, {"target_modules", nullptr},
                                  {"modules_to_save", nullptr}, {"num_trainable_layers", nullptr},
                                  {"trainable_modules", nullptr}};

// A module the models call by name that holds weights of its own (so that a copy in its place trains them).
bool trainable_leaf(const torch::nn::Module& m) {
  bool callable = (dynamic_cast<const models::TensorModule*>(&m) && !dynamic_cast<const AdapterLayer*>(&m)) ||
                  dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const torch::nn::EmbeddingImpl*>(&m) ||
                  dynamic_cast<const torch::nn::LayerNormImpl*>(&m);
  return callable && !m.named_parameters(false).is_empty();
}

// Paths of the top k blocks of every layer stack ("model.layers.N", "transformer.h.N", "encoder.block.N", ...).
std::vector<std::string> top_layers(models::Model& model, int64_t k) {
  static const std::regex block(R"((.*\.)?(layers|h|layer|block)\.(\d+))");
  std::map<std::string, std::vector<std::pair<int64_t, std::string>>> stacks;
  for (const auto& item : model.named_modules("", false)) {
    std::smatch m;
    if (std::regex_match(item.key(), m, block)) stacks[m[1].str() + m[2].str()].emplace_back(std::stoll(m[3].str()), item.key());
  }
  std::vector<std::string> out;
  for (auto& [stack, blocks] : stacks) {
    int64_t count = static_cast<int64_t>(blocks.size());
    for (const auto& [index, path] : blocks)
      if (index >= count - k) out.push_back(path);
  }
  return out;
}

// Layer freezing trains copies of the chosen modules' weights; every new adapter starts as the identity.
class LayerFreezingTuner : public WrappingTuner<LayerFreezingLayer> {
 public:
  LayerFreezingTuner()
      : WrappingTuner({kType, kDefaults, 0, nlohmann::json::object(), /*requires_target_modules=*/false,
                       "modules with weights of their own"}) {}

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    std::vector<std::string> chosen;
    if (!config["num_trainable_layers"].is_null()) {
      int64_t k = config_int(config, "num_trainable_layers");
      if (k > model.num_layers())
        fail(ErrorKind::InvalidArgument, "LAYER_FREEZING config field 'num_trainable_layers' is " + std::to_string(k) +
                                             "; the model has " + std::to_string(model.num_layers()) + " layers");
      chosen = top_layers(model, k);
    } else {
      nlohmann::json pattern = config;
      pattern["target_modules"] = config["trainable_modules"];
      pattern["modules_to_save"] = nullptr;
      chosen = find_target_modules(model, pattern, [](const torch::nn::Module&) { return true; });
    }
    nlohmann::json targets = nlohmann::json::array();
    for (const auto& [path, module] : unwrapped_modules(model)) {
      if (!trainable_leaf(*module)) continue;
      for (const auto& c : chosen)
        if (path == c || path.rfind(c + ".", 0) == 0) {
          targets.push_back(path);
          break;
        }
    }
    if (targets.empty())
      fail(ErrorKind::InvalidArgument, "LAYER_FREEZING: no module with weights matches " +
                                           (config["trainable_modules"].is_null() ? std::string("the top layers")
                                                                                  : config["trainable_modules"].dump()));
    config["target_modules"] = targets;
    return config;
  }

  // "<module>.ln_tuning_layers.<adapter>.<param>" -> "<module>.<param>", the base model's own key.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    const std::string marker = ".ln_tuning_layers." + adapter + ".";
    auto pos = model_key.rfind(marker);
    if (pos == std::string::npos) return remove_adapter_name(model_key, adapter);
    return model_key.substr(0, pos + 1) + model_key.substr(pos + marker.size());
  }

 protected:
  void validate(nlohmann::json& config) const override {
    bool by_count = !config["num_trainable_layers"].is_null();
    if (by_count == !config["trainable_modules"].is_null())
      fail(ErrorKind::InvalidArgument, "LAYER_FREEZING config needs exactly one of 'num_trainable_layers' (the top k "
                                       "layers) and 'trainable_modules' (a module pattern)");
    if (by_count && config_int(config, "num_trainable_layers") < 1)
      fail(ErrorKind::InvalidArgument, "LAYER_FREEZING config field 'num_trainable_layers' must be at least 1");
    if (!by_count) config_strings(config, "trainable_modules");
  }

  bool wraps(const torch::nn::Module& m) const override { return trainable_leaf(m); }
  void add(LayerFreezingLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LayerFreezingTuner>());

}  // namespace

}  // namespace peft4j::tuners
