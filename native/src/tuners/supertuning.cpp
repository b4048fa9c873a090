// Super-Tuning. Random state: the support is derived from the base weight (torch.topk of |W|), so it is the same on
// every load; PEFT saves it anyway unless save_precomputed_indices is false, and then it is recomputed here as PEFT
// does (the same weight gives the same support, up to ties in |W|). Fresh values (init_weights false) and the LoRA
// matrices (nn.Linear's own kaiming draws, then PEFT's) come from the global generator in PEFT's order.
#include "peft4j/tuners/supertuning.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's SupertuningConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "SUPERTUNING"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"target_modules", nullptr}, {"modules_to_save", nullptr},
    {"sparsity", 0.99}, {"select_top", true}, {"r", nullptr}, {"lora_alpha", nullptr}, {"lora_dropout", 0.0},
    {"init_weights", true}, {"save_precomputed_indices", true}};

class SupertuningTuner : public WrappingTuner<SupertuningLayer> {
 public:
  // init_weights true: zero values and B = 0, so ΔW = 0.
  SupertuningTuner() : WrappingTuner({"SUPERTUNING", kDefaults, kLinear, {{"init_weights", true}}}) {}

  // PEFT refuses adapters that disagree on save_precomputed_indices (_check_new_adapter_config).
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>&,
               InjectContext& ctx) const override {
    const bool save = config_bool(ctx.config, "save_precomputed_indices");
    for (const auto& item : model.named_modules("", false))
      if (auto* layer = dynamic_cast<SupertuningLayer*>(item.value().get()); layer && layer->saves_indices() != save)
        fail(ErrorKind::InvalidArgument, "SUPERTUNING config field 'save_precomputed_indices' = " +
                                             std::string(save ? "true" : "false") +
                                             ": the indices must be saved for all adapters or none, and the model's "
                                             "other SUPERTUNING adapters say otherwise");
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_probability(config, "sparsity");
    config_bool(config, "select_top");
    config_probability(config, "lora_dropout");
    config_bool(config, "init_weights");
    if (auto r = config_optional_int(config, "r")) {
      if (*r <= 0)
        fail(ErrorKind::InvalidArgument,
             "SUPERTUNING config field 'r' must be a positive integer or null, got " + config["r"].dump());
      if (config["lora_alpha"].is_null()) config["lora_alpha"] = 2 * *r;  // PEFT's __post_init__, saved so
      config_double(config, "lora_alpha");
    } else if (!config["lora_alpha"].is_null()) {
      fail(ErrorKind::InvalidArgument, "SUPERTUNING config field 'lora_alpha' is set but 'r' is null: the LoRA part "
                                       "(Supra mode) needs an explicit r");
    }
    if (!config_bool(config, "save_precomputed_indices"))
      warn("SUPERTUNING save_precomputed_indices=false: the sparse support is recomputed from the base weight's "
           "magnitudes when the adapter is loaded, which assumes the same base weights (ties in |W| may break "
           "differently)");
  }

  void add(SupertuningLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<SupertuningTuner>());

}  // namespace

SupertuningLayer::SupertuningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "SUPERTUNING", /*conv1d=*/false);
  supertuning_values_ = register_module("supertuning_values", std::make_shared<AdapterDict>());
  supertuning_indices_ = register_module("supertuning_indices", std::make_shared<AdapterDict>());
  supertuning_lora_A_ = register_module("supertuning_lora_A", std::make_shared<AdapterDict>());
  supertuning_lora_B_ = register_module("supertuning_lora_B", std::make_shared<AdapterDict>());
}

void SupertuningLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  if (empty()) saves_indices_ = config_bool(config, "save_precomputed_indices");
  at::Tensor weight = base_weight();
  const double sparsity = config_double(config, "sparsity");
  // int(num_params * (1 - sparsity)) in Python's double arithmetic
  const auto k = static_cast<int64_t>(static_cast<double>(weight.numel()) * (1.0 - sparsity));
  if (k < 1)
    fail(ErrorKind::InvalidArgument, "SUPERTUNING config field 'sparsity' = " + config["sparsity"].dump() +
                                         " leaves no trainable entry of a weight with " + std::to_string(weight.numel()) +
                                         " elements; lower it so that at least one entry trains");
  at::Tensor indices;
  at::Tensor values;
  {
    at::NoGradGuard no_grad;
    indices = std::get<1>(at::topk(weight.abs().flatten(), k, 0, config_bool(config, "select_top"), true)).to(at::kInt);
    values = (initialise && config_bool(config, "init_weights")) ? at::zeros({k}, at::kFloat) : at::randn({k}, at::kFloat);
  }
  supertuning_indices_->put_buffer(adapter, indices, saves_indices_);
  supertuning_values_->put_parameter(adapter, values.to(weight.device(), weight.scalar_type()));
  rank_[adapter] = 0;
  scaling_[adapter] = 0.0;
  if (auto r = config_optional_int(config, "r")) {
    torch::nn::Linear a(torch::nn::LinearOptions(shape_.in_features, *r).bias(false));
    torch::nn::Linear b(torch::nn::LinearOptions(*r, shape_.out_features).bias(false));
    if (initialise) {
      at::NoGradGuard no_grad;
      torch::nn::init::kaiming_uniform_(a->weight, std::sqrt(5.0));
      if (config_bool(config, "init_weights"))
        b->weight.zero_();
      else
        torch::nn::init::kaiming_uniform_(b->weight, std::sqrt(5.0));
    }
    a->to(weight.device(), weight.scalar_type());
    b->to(weight.device(), weight.scalar_type());
    supertuning_lora_A_->put_module(adapter, a.ptr());
    supertuning_lora_B_->put_module(adapter, b.ptr());
    rank_[adapter] = *r;
    scaling_[adapter] = config_double(config, "lora_alpha") / static_cast<double>(*r);
  }
  dropout_[adapter] = config_double(config, "lora_dropout");
}

at::Tensor SupertuningLayer::lora_delta(const std::string& adapter, at::ScalarType dtype) const {
  const at::Tensor& a = supertuning_lora_A_->module(adapter).as<torch::nn::Linear>()->weight;
  const at::Tensor& b = supertuning_lora_B_->module(adapter).as<torch::nn::Linear>()->weight;
  return (scaling_.at(adapter) * at::matmul(b, a)).to(dtype);
}

// The LoRA part of one adapter's output, (α/r)·B(A(dropout(x))), in `dtype`.
at::Tensor SupertuningLayer::lora_output(const at::Tensor& x, const std::string& adapter, at::ScalarType dtype) {
  auto* a = supertuning_lora_A_->module(adapter).as<torch::nn::Linear>();
  auto* b = supertuning_lora_B_->module(adapter).as<torch::nn::Linear>();
  at::Tensor input = x;
  if (dropout_.at(adapter) > 0) input = at::dropout(input, dropout_.at(adapter), is_training());
  return (scaling_.at(adapter) * b->forward(a->forward(input.to(a->weight.scalar_type())))).to(dtype);
}

// PEFT composes the base weight and every active adapter's support into one weight and calls F.linear once, then
// adds each Supra adapter's LoRA output.
at::Tensor SupertuningLayer::adapted_forward(const at::Tensor& x) {
  std::vector<std::string> active;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) active.push_back(adapter);
  if (active.empty()) return base_forward(x);
  at::Tensor weight = base_weight();
  at::Tensor composed = weight.reshape(-1);
  for (const auto& adapter : active)
    composed = composed.scatter_add(0, indices(adapter).to(at::kLong), values(adapter).to(weight.scalar_type()));
  at::Tensor result = at::linear(x, composed.reshape_as(weight), linear_bias(*base_layer()));
  for (const auto& adapter : active)
    if (rank_.at(adapter) > 0) result = result + lora_output(x, adapter, result.scalar_type());
  return result;
}

at::Tensor SupertuningLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor sparse = at::zeros_like(base_weight()).reshape(-1).scatter_add(0, indices(adapter).to(at::kLong),
                                                                              values(adapter).to(result.scalar_type()));
  at::Tensor out = result + at::linear(x, sparse.reshape_as(base_weight()));
  return rank_.at(adapter) > 0 ? out + lora_output(x, adapter, result.scalar_type()) : out;
}

at::Tensor SupertuningLayer::delta_weight(const std::string& adapter) const {
  at::Tensor weight = base_weight();
  at::Tensor sparse = at::zeros_like(weight).reshape(-1).scatter_add(0, indices(adapter).to(at::kLong),
                                                                       values(adapter).to(weight.scalar_type()));
  sparse = sparse.reshape_as(weight);
  return rank_.at(adapter) > 0 ? sparse + lora_delta(adapter, weight.scalar_type()) : sparse;
}

// In place, in PEFT's order: the support first, then the LoRA update (and the reverse to unmerge).
void SupertuningLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  w.view(-1).scatter_add_(0, indices(adapter).to(at::kLong), values(adapter).to(w.scalar_type()));
  if (rank_.at(adapter) > 0) w.add_(lora_delta(adapter, w.scalar_type()));
}

void SupertuningLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  if (rank_.at(adapter) > 0) w.sub_(lora_delta(adapter, w.scalar_type()));
  w.view(-1).scatter_add_(0, indices(adapter).to(at::kLong), -values(adapter).to(w.scalar_type()));
}

void SupertuningLayer::forget_adapter(const std::string& adapter) {
  rank_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
