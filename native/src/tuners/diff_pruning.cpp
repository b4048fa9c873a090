// Diff pruning. Random state: the gates' uniform noise u is drawn from libtorch's global generator at every training
// forward (the trainer seeds it); w starts at zero and α at alpha_init.
#include "peft4j/tuners/diff_pruning.h"

#include <cmath>
#include <cstdint>

#include "peft4j/error.h"

namespace peft4j::tuners {

namespace {

const char* kType = "DIFF_PRUNING";
constexpr double kEpsilon = 1e-4;  // the authors' clamp of u

const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"modules_to_save", nullptr},
    {"alpha_init", 5.0}, {"concrete_lower", -1.5}, {"concrete_upper", 1.5}, {"structured_diff_pruning", true},
    {"sparsity_pen", 1.25e-7}, {"learning_rate_alpha", 0.1}, {"fixmask_pct", 0.005}, {"fixmask_steps", nullptr},
    {"total_step", nullptr}, {"base_fingerprints", nullptr}};

class DiffPruningTuner : public ParameterDeltaTuner<DiffPruningLayer> {
 public:
  // w = 0: every new adapter is the identity.
  DiffPruningTuner() : ParameterDeltaTuner({kType, kDefaults, kLinear | kConv1D | kEmbedding, nlohmann::json::object()}) {}

  at::Tensor training_loss_term(const NamedLayers& layers, const std::string& adapter,
                                const nlohmann::json& config) const override {
    at::Tensor sum;
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      if (layer->phase(adapter) != DiffPruningLayer::Phase::L0) continue;
      at::Tensor l0 = layer->expected_l0(adapter);
      sum = sum.defined() ? sum + l0 : l0;
    }
    return sum.defined() ? sum * config_double(config, "sparsity_pen") : sum;
  }

  std::optional<double> learning_rate(const std::string& parameter, const nlohmann::json& config) const override {
    if (parameter.find("_log_alpha.") == std::string::npos) return std::nullopt;
    return config_double(config, "learning_rate_alpha");
  }

  void before_training(const NamedLayers&, const std::string&, nlohmann::json& config,
                       int64_t max_steps) const override {
    if (config["total_step"].is_null()) config["total_step"] = max_steps;
    const int64_t total = config_int(config, "total_step");
    if (config["fixmask_steps"].is_null()) config["fixmask_steps"] = total / 2;
    if (config_int(config, "fixmask_steps") >= total)
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config field 'fixmask_steps' = " +
                                           std::to_string(config_int(config, "fixmask_steps")) +
                                           " leaves no step of the " + std::to_string(total) + " for the L0 phase");
  }

  // The projection, after the L0 phase's last step.
  void after_optimizer_step(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                            int64_t step) const override {
    if (config["total_step"].is_null() || config["fixmask_steps"].is_null()) return;
    if (step == config_int(config, "total_step") - config_int(config, "fixmask_steps")) project(layers, adapter, config);
  }

  void layers_to_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json&,
                            std::map<std::string, at::Tensor>& tensors) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      if (layer->phase(adapter) == DiffPruningLayer::Phase::Sparse) continue;
      const std::string prefix = checkpoint_prefix(path);
      for (const auto& name : layer->parameters()) {
        for (const char* role : {"_diff", "_log_alpha", "_group_log_alpha"}) tensors.erase(prefix + name + role);
        auto [indices, values] = layer->sparse_difference(adapter, name);
        tensors[prefix + name + "_diff_indices"] = indices;
        tensors[prefix + name + "_diff_values"] = values;
      }
    }
  }

  void layers_from_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json& config,
                              const std::map<std::string, at::Tensor>& tensors) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      std::map<std::string, int64_t> sizes;
      for (const auto& name : layer->parameters()) {
        auto it = tensors.find(checkpoint_prefix(path) + name + "_diff_indices");
        sizes[name] = it != tensors.end() && it->second.dim() == 1 ? it->second.size(0) : 0;
      }
      layer->add(adapter, config, /*sparse=*/true, sizes);
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_double(config, "alpha_init");
    const double l = config_double(config, "concrete_lower"), r = config_double(config, "concrete_upper");
    if (!(l <= 0 && r >= 1))
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config fields 'concrete_lower' (" + std::to_string(l) +
                                           ") and 'concrete_upper' (" + std::to_string(r) +
                                           ") must stretch the gate over [0, 1]: lower <= 0, upper >= 1");
    config_bool(config, "structured_diff_pruning");
    if (config_double(config, "sparsity_pen") < 0)
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config field 'sparsity_pen' must not be negative");
    if (config_double(config, "learning_rate_alpha") <= 0)
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config field 'learning_rate_alpha' must be positive");
    const double pct = config_double(config, "fixmask_pct");
    if (!(pct > 0 && pct <= 1))
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config field 'fixmask_pct' must be in (0, 1], got " + std::to_string(pct));
    if (!config["fixmask_steps"].is_null() && config_int(config, "fixmask_steps") < 0)
      fail(ErrorKind::InvalidArgument, "DIFF_PRUNING config field 'fixmask_steps' must not be negative");
    if (!config["total_step"].is_null()) config_positive_int(config, "total_step");
    config_strings(config, "modules_to_save");
  }

  std::vector<std::string> adapted_parameters(const nlohmann::json&, const torch::nn::Module& module) const override {
    std::vector<std::string> out{"weight"};
    if (const auto* b = module.named_parameters(false).find("bias"); b && b->defined()) out.push_back("bias");
    return out;
  }

  void add(DiffPruningLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, config_bool(ctx.config, "inference_mode"));
  }

 private:
  // The global magnitude projection to fixmask_pct of the adapted entries.
  void project(const NamedLayers& layers, const std::string& adapter, const nlohmann::json& config) const {
    at::NoGradGuard no_grad;
    std::vector<std::pair<DiffPruningLayer*, std::string>> where;
    std::vector<at::Tensor> scores;
    int64_t total = 0;
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      if (layer->phase(adapter) != DiffPruningLayer::Phase::L0) return;
      for (const auto& name : layer->parameters()) {
        where.emplace_back(layer, name);
        scores.push_back(layer->eval_difference(adapter, name).abs());
        total += scores.back().numel();
      }
    }
    const auto kept = static_cast<int64_t>(std::llround(config_double(config, "fixmask_pct") * static_cast<double>(total)));
    auto chosen = select_entries(scores, kept, /*smallest=*/false);
    std::map<DiffPruningLayer*, std::map<std::string, at::Tensor>> support;
    for (size_t i = 0; i < where.size(); ++i) support[where[i].first][where[i].second] = chosen[i];
    for (auto& [layer, per_parameter] : support) layer->fix_mask(adapter, per_parameter);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<DiffPruningTuner>());

}  // namespace

DiffPruningLayer::DiffPruningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ParameterDeltaLayer(std::move(base), std::move(state), kType) {
  parameters_ = {"weight"};
  if (base_parameter("bias").defined()) parameters_.push_back("bias");
  for (const auto& name : parameters_) {
    diff_[name] = register_module(name + "_diff", std::make_shared<AdapterDict>());
    log_alpha_[name] = register_module(name + "_log_alpha", std::make_shared<AdapterDict>());
    group_log_alpha_[name] = register_module(name + "_group_log_alpha", std::make_shared<AdapterDict>());
    indices_[name] = register_module(name + "_diff_indices", std::make_shared<AdapterDict>());
    values_[name] = register_module(name + "_diff_values", std::make_shared<AdapterDict>());
  }
}

void DiffPruningLayer::add(const std::string& adapter, const nlohmann::json& config, bool sparse,
                           const std::map<std::string, int64_t>& sizes) {
  Adapter a;
  a.lower = config_double(config, "concrete_lower");
  a.upper = config_double(config, "concrete_upper");
  a.structured = config_bool(config, "structured_diff_pruning");
  a.phase = sparse ? Phase::Sparse : Phase::L0;
  at::NoGradGuard no_grad;
  for (const auto& name : parameters_) {
    at::Tensor p = base_parameter(name);
    if (p.numel() > INT32_MAX)
      fail(ErrorKind::Unsupported, "DIFF_PRUNING saves flat indices as int32; a parameter of " +
                                       std::to_string(p.numel()) + " entries is too large");
    for (auto* dict : {&diff_, &log_alpha_, &group_log_alpha_, &indices_, &values_}) dict->at(name)->remove(adapter);
    if (sparse) {
      auto it = sizes.find(name);
      const int64_t n = it != sizes.end() ? it->second : 0;
      indices_[name]->put_buffer(adapter, at::zeros({n}, p.options().dtype(at::kInt)));
      values_[name]->put_parameter(adapter, at::zeros({n}, p.options()));
    } else {
      const double init = config_double(config, "alpha_init");
      diff_[name]->put_parameter(adapter, at::zeros_like(p));
      log_alpha_[name]->put_parameter(adapter, at::full_like(p, init));
      if (a.structured) group_log_alpha_[name]->put_parameter(adapter, at::full({1}, init, p.options()));
    }
  }
  adapters_[adapter] = a;
}

// The hard-concrete gate: sampled in training, its deterministic value otherwise.
at::Tensor DiffPruningLayer::gate(const at::Tensor& log_alpha, const Adapter& a, bool sample) const {
  at::Tensor s;
  if (sample) {
    at::Tensor u = at::empty_like(log_alpha).uniform_(kEpsilon, 1 - kEpsilon);
    s = at::sigmoid(u.log() - (1 - u).log() + log_alpha);
  } else {
    s = at::sigmoid(log_alpha);
  }
  return at::clamp(s * (a.upper - a.lower) + a.lower, 0, 1);
}

at::Tensor DiffPruningLayer::difference(const std::string& adapter, const std::string& name) {
  return difference(adapter, name, is_training());
}

at::Tensor DiffPruningLayer::eval_difference(const std::string& adapter, const std::string& name) {
  return difference(adapter, name, /*sample=*/false);
}

at::Tensor DiffPruningLayer::difference(const std::string& adapter, const std::string& name, bool sample) {
  const Adapter& a = adapters_.at(adapter);
  if (a.phase == Phase::Sparse) {
    return scatter_entries(indices_.at(name)->parameter(adapter), values_.at(name)->parameter(adapter),
                           base_parameter(name).sizes());
  }
  at::Tensor w = diff_.at(name)->parameter(adapter);
  if (a.phase == Phase::Fixmask) return at::where(a.mask.at(name), w, at::zeros_like(w));
  at::Tensor delta = gate(log_alpha_.at(name)->parameter(adapter), a, sample) * w;
  if (a.structured) delta = delta * gate(group_log_alpha_.at(name)->parameter(adapter), a, sample);
  return delta;
}

at::Tensor DiffPruningLayer::adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  return value + difference(adapter, name).to(value.scalar_type());
}

at::Tensor DiffPruningLayer::expected_l0(const std::string& adapter) const {
  const Adapter& a = adapters_.at(adapter);
  const double offset = a.lower == 0 ? 0.0 : std::log(-a.lower / a.upper);
  at::Tensor sum;
  for (const auto& name : parameters_) {
    at::Tensor term = at::sigmoid(log_alpha_.at(name)->parameter(adapter) - offset).sum();
    if (a.structured) term = term + at::sigmoid(group_log_alpha_.at(name)->parameter(adapter) - offset).sum();
    sum = sum.defined() ? sum + term : term;
  }
  return sum;
}

void DiffPruningLayer::fix_mask(const std::string& adapter, const std::map<std::string, at::Tensor>& support) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> values;
  for (const auto& name : parameters_) values[name] = eval_difference(adapter, name);
  Adapter& a = adapters_.at(adapter);
  for (const auto& name : parameters_) {
    at::Tensor w = diff_.at(name)->parameter(adapter);
    at::Tensor mask = at::zeros({w.numel()}, w.options().dtype(at::kBool));
    mask.index_fill_(0, support.at(name).to(w.device()), true);
    a.mask[name] = mask.view(w.sizes());
    w.copy_(at::where(a.mask[name], values[name], at::zeros_like(w)));
  }
  a.phase = Phase::Fixmask;
}

std::pair<at::Tensor, at::Tensor> DiffPruningLayer::sparse_difference(const std::string& adapter, const std::string& name) {
  at::NoGradGuard no_grad;
  const Adapter& a = adapters_.at(adapter);
  if (a.phase == Phase::Sparse) return {indices_.at(name)->parameter(adapter), values_.at(name)->parameter(adapter)};
  at::Tensor dense = eval_difference(adapter, name).reshape(-1);
  at::Tensor kept = (a.phase == Phase::Fixmask ? a.mask.at(name).reshape(-1) : dense.ne(0)).nonzero().view(-1);
  return {kept.to(at::kInt), dense.index_select(0, kept)};
}

void DiffPruningLayer::forget_adapter(const std::string& adapter) { adapters_.erase(adapter); }

}  // namespace peft4j::tuners
