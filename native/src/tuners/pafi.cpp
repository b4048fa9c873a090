// PaFi. Random state: none; the mask is a function of θ₀ (or of θ₀ and the calibration examples).
#include "peft4j/tuners/pafi.h"

#include <cstdint>

#include "peft4j/error.h"
#include "peft4j/train/training_data.h"
#include "peft4j/tuners/bitfit.h"

namespace peft4j::tuners {

namespace {

const char* kType = "PAFI";

const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"modules_to_save", nullptr}, {"k", nullptr},
    {"mask_type", "magnitude"}, {"base_fingerprints", nullptr}};

// BitFit's count on the model: the paper compares PaFi with BitFit at the same budget.
int64_t bitfit_count(models::Model& model) {
  int64_t n = 0;
  for (const auto& item : model.named_modules("", false))
    if (has_bias(*item.value())) n += item.value()->named_parameters(false)["bias"].numel();
  return n;
}

// (1/N)·Σᵢ (∂Lᵢ/∂W)² for each target weight over the N calibration examples (each row of each batch, alone and
// unpadded, so the batching does not matter), the base model alone in eval mode.
std::vector<at::Tensor> fisher_scores(models::Model& model, const std::vector<at::Tensor>& weights,
                                      const std::vector<models::ModelInputs>& batches, AdapterState& state) {
  std::vector<at::Tensor> scores;
  for (const auto& w : weights) scores.push_back(at::zeros(w.sizes(), w.options().dtype(at::kFloat)));
  const bool training = model.is_training(), disabled = state.disabled;
  state.disabled = true;
  model.eval();
  struct Restore {
    models::Model& model;
    AdapterState& state;
    const std::vector<at::Tensor>& weights;
    bool training, disabled;
    ~Restore() {
      for (auto w : weights) {
        w.set_requires_grad(false);
        w.mutable_grad() = at::Tensor();
      }
      state.disabled = disabled;
      model.train(training);
    }
  } restore{model, state, weights, training, disabled};
  for (auto w : weights) w.set_requires_grad(true);
  std::vector<models::ModelInputs> examples;
  for (const auto& batch : batches)
    for (int64_t row = 0; row < batch.input_ids.size(0); ++row)
      examples.push_back(train::unpadded_row(batch, row, batch.input_ids.device()));
  for (const auto& example : examples) {
    if (!example.labels.defined())
      fail(ErrorKind::InvalidArgument, "PAFI's Fisher mask needs calibration examples with labels");
    at::Tensor loss = model.forward(example).loss;
    if (!loss.defined()) fail(ErrorKind::Internal, "the model computed no loss from a calibration example");
    loss.backward();
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < weights.size(); ++i) {
      at::Tensor& g = weights[i].mutable_grad();
      scores[i].add_(g.to(at::kFloat).square());
      g = at::Tensor();
    }
  }
  for (auto& s : scores) s.div_(static_cast<double>(examples.size()));
  return scores;
}

class PafiTuner : public ParameterDeltaTuner<PafiLayer> {
 public:
  // Every new adapter starts as the identity (δ = 0).
  PafiTuner() : ParameterDeltaTuner({kType, kDefaults, kLinear | kConv1D, nlohmann::json::object()}) {}

  // The global mask, handed to each layer as its flat indices.
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    const bool fisher = config_string(ctx.config, "mask_type") == "fisher";
    // A loaded Fisher mask comes from the file (layers_from_checkpoint sizes the layers first).
    if (fisher && config_bool(ctx.config, "inference_mode")) return;
    std::vector<at::Tensor> weights;
    int64_t total = 0;
    for (const auto& path : targets) {
      weights.push_back(unwrapped_module(model, path).named_parameters(false)["weight"]);
      total += weights.back().numel();
    }
    const int64_t k = ctx.config["k"].is_null() ? bitfit_count(model) : config_int(ctx.config, "k");
    if (k == 0)
      fail(ErrorKind::InvalidArgument, "PAFI config field 'k' is null, which means BitFit's count, but the " +
                                           model.model_type() + " model has no biases: give k");
    if (k > total)
      fail(ErrorKind::InvalidArgument, "PAFI config field 'k' = " + std::to_string(k) + " exceeds the " +
                                           std::to_string(total) + " entries of the targeted weights");
    std::vector<at::Tensor> scores;
    if (fisher) {
      if (!ctx.data)
        fail(ErrorKind::InvalidArgument, "PAFI config field 'mask_type' is \"fisher\": the mask needs calibration "
                                         "examples (PeftModel::add_adapter's data, the CLI's --calibration-data)");
      scores = fisher_scores(model, weights, *ctx.data, *ctx.state);
    } else {
      for (const auto& w : weights) scores.push_back(w.detach().abs());
    }
    auto chosen = select_entries(scores, k, /*smallest=*/true);
    for (size_t i = 0; i < targets.size(); ++i) ctx.shared["pafi_indices:" + targets[i]] = chosen[i];
  }

  // The Fisher mask reads the data in prepare(); the magnitude mask reads none.
  nlohmann::json prepare_from_data(const nlohmann::json& config, models::Model&, const std::vector<models::ModelInputs>&,
                                   std::map<std::string, at::Tensor>&) const override {
    if (config_string(config, "mask_type") != "fisher")
      fail(ErrorKind::InvalidArgument, "PAFI config field 'mask_type' is " + config["mask_type"].dump() +
                                           ": the mask is made from the weights alone, so calibration data is refused "
                                           "(only mask_type \"fisher\" reads it)");
    return config;
  }

  // A loaded Fisher mask: each layer takes the size of the file's indices before they are copied in.
  void layers_from_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json& config,
                              const std::map<std::string, at::Tensor>& tensors) const override {
    if (config_string(config, "mask_type") != "fisher") return;
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      auto it = tensors.find(checkpoint_prefix(path) + "pafi_indices");
      if (it != tensors.end() && it->second.dim() == 1)
        layer->add(adapter, at::zeros({it->second.size(0)}, at::kLong), /*saved=*/true);
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    if (!config["k"].is_null()) config_positive_int(config, "k");
    config_choice(config, "mask_type", {"magnitude", "fisher"});
    config_strings(config, "modules_to_save");
  }

  std::vector<std::string> adapted_parameters(const nlohmann::json&, const torch::nn::Module&) const override {
    return {"weight"};
  }

  void add(PafiLayer& layer, const InjectContext& ctx) const override {
    const bool fisher = config_string(ctx.config, "mask_type") == "fisher";
    auto it = ctx.shared.find("pafi_indices:" + ctx.key);
    layer.add(ctx.adapter, it != ctx.shared.end() ? it->second : at::zeros({0}, at::kLong), fisher);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PafiTuner>());

}  // namespace

PafiLayer::PafiLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ParameterDeltaLayer(std::move(base), std::move(state), kType) {
  values_ = register_module("pafi_values", std::make_shared<AdapterDict>());
  indices_ = register_module("pafi_indices", std::make_shared<AdapterDict>());
}

void PafiLayer::add(const std::string& adapter, const at::Tensor& indices, bool saved) {
  at::Tensor weight = base_parameter("weight");
  if (weight.numel() > INT32_MAX)
    fail(ErrorKind::Unsupported, "PAFI saves flat indices as int32; a weight of " + std::to_string(weight.numel()) +
                                     " entries is too large");
  at::NoGradGuard no_grad;
  indices_->put_buffer(adapter, indices.to(weight.device(), at::kInt), /*persistent=*/saved);
  values_->put_parameter(adapter, at::zeros({indices.numel()}, weight.options()));
}

at::Tensor PafiLayer::adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  if (name != "weight") return value;
  at::Tensor values = values_->parameter(adapter);
  return value + scatter_entries(indices_->parameter(adapter), values, value.sizes()).to(value.scalar_type());
}

}  // namespace peft4j::tuners
