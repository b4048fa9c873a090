// PST. Random state: U and A are drawn from libtorch's global generator (the authors' torch.randn), V, B, R and C are
// zero.
#include "peft4j/tuners/pst.h"

#include <cmath>
#include <cstdint>

#include "peft4j/error.h"

namespace peft4j::tuners {

namespace {

const char* kType = "PST";

// The authors' run_glue.py defaults.
const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"modules_to_save", nullptr},
    {"weight_rank", 8}, {"weight_beta", 1.0}, {"mask_rank", 8}, {"mask_alpha1", 1.0}, {"mask_alpha2", 1.0},
    {"sparsity", 0.9}, {"initial_sparsity", 0.0}, {"initial_warmup", 0.1}, {"final_warmup", 0.3},
    {"total_step", nullptr}, {"base_fingerprints", nullptr}};

double schedule(const nlohmann::json& config, int64_t step) {
  return pst_sparsity(step, config_int(config, "total_step"), config_double(config, "initial_warmup"),
                      config_double(config, "final_warmup"), config_double(config, "initial_sparsity"),
                      config_double(config, "sparsity"));
}

// Before a schedule is known (no trainer yet, or total_step not set) the mask keeps initial_sparsity.
double current(const nlohmann::json& config, int64_t step) {
  return config["total_step"].is_null() ? config_double(config, "initial_sparsity") : schedule(config, step);
}

class PstTuner : public ParameterDeltaTuner<PstLayer> {
 public:
  // initial_sparsity 0: the mask keeps every entry and U·V = 0, so a new adapter is the identity.
  PstTuner() : ParameterDeltaTuner({kType, kDefaults, kLinear | kConv1D, {{"initial_sparsity", 0.0}}}) {}

  void before_training(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                       int64_t max_steps) const override {
    if (config["total_step"].is_null()) config["total_step"] = max_steps;
    for (const auto& [path, layer] : layers_of(layers, adapter)) layer->set_sparsity(adapter, schedule(config, 0));
  }

  void after_optimizer_step(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                            int64_t step) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) layer->set_sparsity(adapter, current(config, step));
  }

  void layers_to_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json&,
                            std::map<std::string, at::Tensor>& tensors) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      if (layer->stored(adapter)) continue;
      const std::string prefix = checkpoint_prefix(path);
      for (auto it = tensors.lower_bound(prefix + "pst."); it != tensors.end() && it->first.rfind(prefix + "pst.", 0) == 0;)
        it = tensors.erase(it);
      auto [indices, values] = layer->sparse_weight(adapter);
      tensors[prefix + "pst_indices"] = indices;
      tensors[prefix + "pst_values"] = values;
    }
  }

  // A loaded adapter's layers take the size of the file's sparse weights before they are copied in.
  void layers_from_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json& config,
                              const std::map<std::string, at::Tensor>& tensors) const override {
    for (const auto& [path, layer] : layers_of(layers, adapter)) {
      auto it = tensors.find(checkpoint_prefix(path) + "pst_indices");
      if (it != tensors.end() && it->second.dim() == 1)
        layer->add(adapter, config, layer->sparsity(adapter), /*stored=*/true, it->second.size(0));
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "weight_rank");
    config_positive_int(config, "mask_rank");
    for (const char* field : {"weight_beta", "mask_alpha1", "mask_alpha2"}) config_double(config, field);
    config_probability(config, "sparsity");
    config_probability(config, "initial_sparsity");
    config_probability(config, "initial_warmup", /*one_allowed=*/true);
    config_probability(config, "final_warmup", /*one_allowed=*/true);
    if (config_double(config, "initial_warmup") + config_double(config, "final_warmup") >= 1)
      fail(ErrorKind::InvalidArgument, "PST config fields 'initial_warmup' + 'final_warmup' must leave steps for the "
                                       "sparsity to grow (their sum is below 1)");
    if (!config["total_step"].is_null()) config_positive_int(config, "total_step");
    config_strings(config, "modules_to_save");
  }

  std::vector<std::string> adapted_parameters(const nlohmann::json&, const torch::nn::Module&) const override {
    return {"weight"};
  }

  void add(PstLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, current(ctx.config, 0), config_bool(ctx.config, "inference_mode"));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PstTuner>());

}  // namespace

double pst_sparsity(int64_t step, int64_t total, double initial_warmup, double final_warmup, double initial_sparsity,
                    double final_sparsity) {
  const double t = static_cast<double>(step), n = static_cast<double>(total);
  if (t <= initial_warmup * n) return initial_sparsity;
  if (t > n - final_warmup * n) return final_sparsity;
  const double left = 1 - (t - initial_warmup * n) / (n - (final_warmup + initial_warmup) * n);
  return final_sparsity + (initial_sparsity - final_sparsity) * left * left * left;
}

PstLayer::PstLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ParameterDeltaLayer(std::move(base), std::move(state), kType) {
  pst_ = register_module("pst", std::make_shared<AdapterDict>());
  indices_ = register_module("pst_indices", std::make_shared<AdapterDict>());
  values_ = register_module("pst_values", std::make_shared<AdapterDict>());
}

void PstLayer::add(const std::string& adapter, const nlohmann::json& config, double sparsity, bool stored,
                   int64_t kept) {
  at::Tensor weight = base_parameter("weight");
  if (weight.numel() > INT32_MAX)
    fail(ErrorKind::Unsupported, "PST saves flat indices as int32; a weight of " + std::to_string(weight.numel()) +
                                     " entries is too large");
  sparsity_[adapter] = sparsity;
  scales_[adapter] = {config_double(config, "weight_beta"), config_double(config, "mask_alpha1"),
                      config_double(config, "mask_alpha2")};
  at::NoGradGuard no_grad;
  if (stored) {
    stored_.insert(adapter);
    pst_->remove(adapter);
    indices_->put_buffer(adapter, at::zeros({kept}, weight.options().dtype(at::kInt)));
    values_->put_parameter(adapter, at::zeros({kept}, weight.options()));
    return;
  }
  stored_.erase(adapter);
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t r = config_int(config, "weight_rank"), r2 = config_int(config, "mask_rank");
  auto module = std::make_shared<torch::nn::Module>();
  module->register_parameter("weight_U", at::randn({n, r}, at::kFloat).to(weight.options()));
  module->register_parameter("weight_V", at::zeros({r, k}, weight.options()));
  module->register_parameter("mask_scores_A", at::randn({n, r2}, at::kFloat).to(weight.options()));
  module->register_parameter("mask_scores_B", at::zeros({r2, k}, weight.options()));
  module->register_parameter("mask_scores_R", at::zeros({n}, weight.options()));
  module->register_parameter("mask_scores_C", at::zeros({k}, weight.options()));
  pst_->put_module(adapter, module);
}

at::Tensor PstLayer::updated_weight(const std::string& adapter, const at::Tensor& weight) {
  auto p = pst_->module(adapter).named_parameters(false);
  return weight + scales_.at(adapter).weight_beta * p["weight_U"].mm(p["weight_V"]).to(weight.scalar_type());
}

at::Tensor PstLayer::scores(const std::string& adapter, const at::Tensor& updated) {
  auto p = pst_->module(adapter).named_parameters(false);
  const Scales& s = scales_.at(adapter);
  return updated.detach().abs() + s.mask_alpha1 * p["mask_scores_A"].mm(p["mask_scores_B"]) +
         s.mask_alpha2 * (p["mask_scores_R"].unsqueeze(1) + p["mask_scores_C"].unsqueeze(0));
}

// The v entries of largest score, ties by flat index (a stable descending sort).
at::Tensor PstLayer::mask(const std::string& adapter, const at::Tensor& scores) const {
  const int64_t numel = scores.numel();
  const int64_t kept = numel - static_cast<int64_t>(static_cast<double>(numel) * sparsity_.at(adapter));
  at::Tensor order = std::get<1>(at::sort(scores.detach().reshape(-1), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor keep = at::zeros({numel}, scores.options().dtype(at::kBool));
  return keep.index_fill_(0, order.slice(0, 0, kept), true).view(scores.sizes());
}

at::Tensor PstLayer::adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  if (name != "weight") return value;
  if (stored(adapter)) return scatter_entries(indices_->parameter(adapter), values_->parameter(adapter), value.sizes());
  at::Tensor updated = updated_weight(adapter, value);
  at::Tensor s = scores(adapter, updated);
  at::Tensor effective = at::where(mask(adapter, s), updated, at::zeros_like(updated));
  // Straight through: the value is unchanged (S − S = 0), the gradient G ⊙ W′ reaches S as if M were 1.
  if (at::GradMode::is_enabled()) effective = effective + updated * (s - s.detach()).to(updated.scalar_type());
  return effective;
}

std::pair<at::Tensor, at::Tensor> PstLayer::sparse_weight(const std::string& adapter) {
  at::NoGradGuard no_grad;
  if (stored(adapter)) return {indices_->parameter(adapter), values_->parameter(adapter)};
  at::Tensor updated = updated_weight(adapter, base_parameter("weight"));
  at::Tensor kept = mask(adapter, scores(adapter, updated)).reshape(-1).nonzero().view(-1);
  return {kept.to(at::kInt), updated.reshape(-1).index_select(0, kept)};
}

void PstLayer::forget_adapter(const std::string& adapter) {
  sparsity_.erase(adapter);
  scales_.erase(adapter);
  stored_.erase(adapter);
}

}  // namespace peft4j::tuners
