// BitFit. Random state: none; every adapter starts as a copy of the biases.
#include "peft4j/tuners/bitfit.h"

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"

namespace peft4j::tuners {

namespace {

const char* kType = "BITFIT";

const nlohmann::json kDefaults = {{"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr},
                                  {"revision", nullptr}, {"inference_mode", false}, {"target_modules", nullptr},
                                  {"exclude_modules", nullptr}, {"modules_to_save", nullptr}};

// BitFit trains copies of the targeted modules' biases; every new adapter starts as the identity.
class BitFitTuner : public WrappingTuner<BitFitLayer> {
 public:
  BitFitTuner()
      : WrappingTuner({kType, kDefaults, 0, nlohmann::json::object(), /*requires_target_modules=*/false,
                       "modules with a bias"}) {}

  // The classification head is trained whole, and without target_modules every module with a bias is a target.
  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    if (config["modules_to_save"].is_null() && model.task() == models::Task::SequenceClassification &&
        model.named_children().contains("classifier"))
      config["modules_to_save"] = {"classifier"};
    if (config["target_modules"].is_null()) {
      auto heads = config_strings(config, "modules_to_save").value_or(std::vector<std::string>{});
      nlohmann::json targets = nlohmann::json::array();
      for (const auto& [path, module] : unwrapped_modules(model)) {
        bool head = false;
        for (const auto& h : heads) head = head || path == h || path.rfind(h + ".", 0) == 0;
        if (!head && has_bias(*module)) targets.push_back(path);
      }
      if (targets.empty()) fail(ErrorKind::InvalidArgument, "BITFIT: the " + model.model_type() + " model has no biases to train");
      config["target_modules"] = targets;
    }
    return config;
  }

  // "<module>.bitfit_bias.<adapter>" -> "<module>.bias", the base model's own key.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    const std::string tail = ".bitfit_bias." + adapter;
    if (model_key.size() > tail.size() && model_key.compare(model_key.size() - tail.size(), tail.size(), tail) == 0)
      return model_key.substr(0, model_key.size() - tail.size()) + ".bias";
    return remove_adapter_name(model_key, adapter);
  }

 protected:
  bool wraps(const torch::nn::Module& m) const override { return has_bias(m); }
  void validate(nlohmann::json& config) const override {
    config_strings(config, "target_modules");
    config_strings(config, "modules_to_save");
  }
  void add(BitFitLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<BitFitTuner>());

}  // namespace

bool has_bias(const torch::nn::Module& module) {
  if (!dynamic_cast<const torch::nn::LinearImpl*>(&module) && !dynamic_cast<const models::Conv1DImpl*>(&module) &&
      !dynamic_cast<const torch::nn::LayerNormImpl*>(&module))
    return false;
  const auto* bias = module.named_parameters(false).find("bias");
  return bias && bias->defined();
}

BitFitLayer::BitFitLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(std::move(base), std::move(state)) {}

at::Tensor BitFitLayer::base_bias() const { return base_layer()->named_parameters(false)["bias"]; }

void BitFitLayer::add(const std::string& adapter) { biases_->put_parameter(adapter, base_bias().detach().clone()); }

at::Tensor BitFitLayer::apply(const at::Tensor&, const at::Tensor& result, const std::string& adapter) {
  return result + (biases_->parameter(adapter) - base_bias()).to(result.scalar_type());
}

void BitFitLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor bias = base_bias();
  at::Tensor delta = biases_->parameter(adapter).detach() - bias;
  merged_deltas_[adapter] = delta;
  bias.add_(delta);
}

void BitFitLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  base_bias().sub_(merged_deltas_.at(adapter));
  merged_deltas_.erase(adapter);
}

}  // namespace peft4j::tuners
