// HiWi. Random state: W_down and b_down are initialised as nn.Linear does, from libtorch's global generator (seeded by
// PeftModel.create's seed); W_up and b_up are zero.
#include "peft4j/tuners/hiwi.h"

#include <torch/nn/modules/linear.h>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"

namespace peft4j::tuners {

namespace {

const char* kType = "HIWI";

const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"modules_to_save", nullptr}, {"r", 8},
    {"non_linearity", "relu"}, {"target_parameters", {"bias"}}, {"base_fingerprints", nullptr}};

// The feed-forward modules of each family: HiWi's default targets.
nlohmann::json feed_forward_modules(const std::string& model_type) {
  if (model_type == "llama" || model_type == "qwen2" || model_type == "mistral")
    return {"gate_proj", "up_proj", "down_proj"};
  if (model_type == "gpt2") return {"mlp.c_fc", "mlp.c_proj"};
  if (model_type == "bert") return R"(.*\.layer\.\d+\.(intermediate|output)\.dense)";
  if (model_type == "t5") return {"wi", "wo", "wi_0", "wi_1"};
  fail(ErrorKind::InvalidArgument, "HIWI config field 'target_modules' is null, and peft4j does not know the "
                                   "feed-forward modules of " + model_type + " models: give target_modules");
}

std::vector<std::string> target_parameters(const nlohmann::json& config) {
  return *config_strings(config, "target_parameters");
}

class HiwiTuner : public ParameterDeltaTuner<HiwiLayer> {
 public:
  // Every new adapter starts as the identity (W_up = 0, b_up = 0).
  HiwiTuner()
      : ParameterDeltaTuner({kType, kDefaults, kLinear | kConv1D | kEmbedding, nlohmann::json::object(),
                             /*requires_target_modules=*/false}) {}

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    if (config["target_modules"].is_null()) config["target_modules"] = feed_forward_modules(model.model_type());
    return ParameterDeltaTuner::resolve_for_model(config, model);
  }

  // A targeted module must have every parameter the adapter transforms (Llama's projections have no bias).
  void check_model(const nlohmann::json& config, models::Model& model) const override {
    ParameterDeltaTuner::check_model(config, model);
    for (const auto& path : find_target_modules(model, config, [&](const torch::nn::Module& m) { return can_wrap(m); })) {
      auto params = unwrapped_module(model, path).named_parameters(false);
      for (const auto& name : target_parameters(config))
        if (const auto* p = params.find(name); !p || !p->defined())
          fail(ErrorKind::InvalidArgument, "HIWI config field 'target_parameters' names \"" + name + "\", but module '" +
                                               path + "' has no " + name + " (" + model.model_type() +
                                               "'s projections have none): target other modules or parameters");
    }
  }

  // The saved form: p′ under the model's own key, the networks left out.
  void layers_to_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json&,
                            std::map<std::string, at::Tensor>& tensors) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      if (layer->stored(adapter)) continue;
      const std::string prefix = checkpoint_prefix(path);
      for (const auto& name : layer->adapted_parameters(adapter)) {
        for (auto it = tensors.lower_bound(prefix + "hiwi_" + name + ".");
             it != tensors.end() && it->first.rfind(prefix + "hiwi_" + name + ".", 0) == 0;)
          it = tensors.erase(it);
        tensors[prefix + name] = layer->merged_parameter(adapter, name).detach();
      }
    }
  }

  // "<module>.hiwi_stored_bias.<adapter>" -> "<module>.bias", the model's own key.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    for (const char* name : {"weight", "bias"}) {
      const std::string tail = std::string(".hiwi_stored_") + name + "." + adapter;
      if (model_key.size() > tail.size() && model_key.compare(model_key.size() - tail.size(), tail.size(), tail) == 0)
        return model_key.substr(0, model_key.size() - tail.size()) + "." + name;
    }
    return remove_adapter_name(model_key, adapter);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    models::activation_by_name(config_string(config, "non_linearity"), "HIWI config field 'non_linearity'");
    auto names = config_strings(config, "target_parameters");
    if (!names || names->empty())
      fail(ErrorKind::InvalidArgument, "HIWI config field 'target_parameters' must list \"bias\" and/or \"weight\"");
    for (const auto& n : *names)
      if (n != "bias" && n != "weight")
        fail(ErrorKind::InvalidArgument, "HIWI config field 'target_parameters' has \"" + n + "\" (\"bias\", \"weight\")");
    config_strings(config, "modules_to_save");
  }

  std::vector<std::string> adapted_parameters(const nlohmann::json& config, const torch::nn::Module&) const override {
    return target_parameters(config);
  }

  void add(HiwiLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, target_parameters(ctx.config), config_int(ctx.config, "r"),
              config_string(ctx.config, "non_linearity"), config_bool(ctx.config, "inference_mode"));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<HiwiTuner>());

// W_down and W_up with their biases, as "down" and "up" (saved "<module>.hiwi_bias.down.weight", ...).
struct Network : torch::nn::Module {
  Network(int64_t n, int64_t r) {
    down = register_module("down", torch::nn::Linear(n, r));
    up = register_module("up", torch::nn::Linear(r, n));
    at::NoGradGuard no_grad;
    up->weight.zero_();
    up->bias.zero_();
  }
  torch::nn::Linear down{nullptr}, up{nullptr};
};

}  // namespace

HiwiLayer::HiwiLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ParameterDeltaLayer(std::move(base), std::move(state), kType) {
  for (const char* name : {"weight", "bias"}) {
    networks_[name] = register_module(std::string("hiwi_") + name, std::make_shared<AdapterDict>());
    values_[name] = register_module(std::string("hiwi_stored_") + name, std::make_shared<AdapterDict>());
  }
}

// p + f(p·W_down + b_down)·W_up + b_up row by row, rows in Linear's layout (Conv1D's [in, out] weight transposed).
at::Tensor HiwiLayer::transform(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  auto& network = dynamic_cast<Network&>(networks_.at(name)->module(adapter));
  const bool conv1d = dynamic_cast<const models::Conv1DImpl*>(base_layer().get()) != nullptr;
  at::Tensor x = value.dim() == 1 ? value.unsqueeze(0) : conv1d ? value.t() : value;
  at::Tensor out = x + network.up(activation_.at(adapter)(network.down(x)));
  return value.dim() == 1 ? out.squeeze(0) : conv1d ? out.t() : out;
}

void HiwiLayer::add(const std::string& adapter, const std::vector<std::string>& parameters, int64_t r,
                    const std::string& non_linearity, bool stored) {
  parameters_[adapter] = parameters;
  activation_[adapter] = models::activation_by_name(non_linearity, "HIWI config field 'non_linearity'");
  if (stored) stored_.insert(adapter); else stored_.erase(adapter);
  for (const auto& name : parameters) {
    at::Tensor p = base_parameter(name);
    if (stored) {
      at::NoGradGuard no_grad;
      values_.at(name)->put_parameter(adapter, p.detach().clone());
    } else {
      const bool conv1d = dynamic_cast<const models::Conv1DImpl*>(base_layer().get()) != nullptr;
      auto network = std::make_shared<Network>(p.dim() == 1 || !conv1d ? p.size(-1) : p.size(0), r);
      network->to(p.device(), p.scalar_type());
      networks_.at(name)->put_module(adapter, network);
    }
  }
}

at::Tensor HiwiLayer::merged_parameter(const std::string& adapter, const std::string& name) {
  return stored(adapter) ? values_.at(name)->parameter(adapter) : transform(adapter, name, base_parameter(name));
}

at::Tensor HiwiLayer::adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  const auto& names = parameters_.at(adapter);
  if (std::find(names.begin(), names.end(), name) == names.end()) return value;
  if (stored(adapter)) return values_.at(name)->parameter(adapter).to(value.scalar_type());
  return transform(adapter, name, value).to(value.scalar_type());  // from the parameter as earlier adapters left it
}

void HiwiLayer::forget_adapter(const std::string& adapter) {
  parameters_.erase(adapter);
  activation_.erase(adapter);
  stored_.erase(adapter);
}

}  // namespace peft4j::tuners
