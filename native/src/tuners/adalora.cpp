// AdaLoRA as PEFT 0.21 implements it (tuners/adalora). Random state: a new adapter draws A, E and B with our own
// generator from PEFT's distributions (N(0, 1), or E = 0 and A, B ~ N(0, 0.02) with init_lora_weights true); the
// exact values of an adapter come from its saved file, as PEFT loads them. The regulariser and the rank allocator are
// deterministic functions of the weights and gradients and follow PEFT's arithmetic step for step.
#include "peft4j/tuners/adalora.h"

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora.h"

namespace peft4j::tuners {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The module a rank_pattern key names. PEFT keeps "<module>.lora_E.<adapter>" in memory and saves "<module>.lora_E".
std::string pattern_module(std::string key, const std::string& adapter) {
  auto part = key.rfind(".lora_E");
  if (part != std::string::npos) return key.substr(0, part);
  if (!adapter.empty() && ends_with(key, "." + adapter)) key.resize(key.size() - adapter.size() - 1);
  auto dot = key.rfind('.');
  return dot == std::string::npos ? std::string() : key.substr(0, dot);
}

// The rank_pattern entry of module `module_key` (a list of booleans, one per initial rank), or null.
const nlohmann::json* pattern_for(const nlohmann::json& config, const std::string& module_key, const std::string& adapter) {
  const auto& pattern = config["rank_pattern"];
  if (!pattern.is_object()) return nullptr;
  for (auto it = pattern.begin(); it != pattern.end(); ++it)
    if (pattern_module(it.key(), adapter) == module_key) return &it.value();
  return nullptr;
}

at::Tensor keep_mask(const nlohmann::json& entry) {
  std::vector<uint8_t> keep;
  for (const auto& b : entry) keep.push_back(b.get<bool>() ? 1 : 0);
  return at::tensor(keep, at::TensorOptions().dtype(at::kByte)).to(at::kBool);
}

std::vector<std::pair<std::string, AdaLoraLayer*>> adalora_layers(const NamedLayers& layers, const std::string& adapter) {
  std::vector<std::pair<std::string, AdaLoraLayer*>> out;
  for (const auto& [path, layer] : layers)
    if (auto* a = dynamic_cast<AdaLoraLayer*>(layer); a && a->has_adapter(adapter)) out.emplace_back(path, a);
  return out;
}

class AdaLoraTuner : public WrappingTuner<AdaLoraLayer> {
 public:
  AdaLoraTuner() : WrappingTuner({"ADALORA", defaults(), kLinear | kConv1D, {{"init_lora_weights", true}}}) {}

 protected:
  // LoraConfig's fields plus the rank allocator's; PEFT's AdaLoraConfig has no rank_pattern by default.
  static nlohmann::json defaults() {
    nlohmann::json d = lora_config_defaults("ADALORA");
    d.update({{"rank_pattern", nullptr}, {"target_r", 8}, {"init_r", 12}, {"tinit", 0}, {"tfinal", 0}, {"deltaT", 1},
              {"beta1", 0.85}, {"beta2", 0.85}, {"orth_reg_weight", 0.5}, {"total_step", nullptr}});
    return d;
  }

  void validate(nlohmann::json& config) const override {
    // PEFT's AdaLoraConfig refuses DoRA itself.
    if (config_bool(config, "use_dora"))
      fail(ErrorKind::InvalidArgument, "ADALORA config field 'use_dora': AdaLoRA does not support DoRA");
    refuse_unsupported_lora_options(config);
    if (!config["init_lora_weights"].is_boolean())
      fail(ErrorKind::Unsupported, "ADALORA config field 'init_lora_weights' = " + config["init_lora_weights"].dump() +
                                       " is not supported by peft4j (true or false)");
    const int64_t total_step = config_positive_int(config, "total_step");
    const int64_t tinit = config_int(config, "tinit");
    const int64_t tfinal = config_int(config, "tfinal");
    if (tinit < 0 || tfinal < 0)
      fail(ErrorKind::InvalidArgument, "ADALORA config fields 'tinit' and 'tfinal' must not be negative");
    if (tinit >= total_step - tfinal)
      fail(ErrorKind::InvalidArgument, "ADALORA config fields 'tinit' (" + std::to_string(tinit) + ") and 'tfinal' (" +
                                           std::to_string(tfinal) + ") leave no budgeting phase within 'total_step' (" +
                                           std::to_string(total_step) + ")");
    config_positive_int(config, "deltaT");
    for (const char* beta : {"beta1", "beta2"}) {
      double b = config_double(config, beta);
      if (!(b > 0 && b < 1))
        fail(ErrorKind::InvalidArgument, std::string("ADALORA config field '") + beta + "' must be in (0, 1), got " +
                                             config[beta].dump());
    }
    if (config_double(config, "orth_reg_weight") < 0)
      fail(ErrorKind::InvalidArgument, "ADALORA config field 'orth_reg_weight' must be >= 0, got " +
                                           config["orth_reg_weight"].dump());
    for (const char* rank : {"init_r", "target_r"})
      if (config_int(config, rank) < 0)
        fail(ErrorKind::InvalidArgument, std::string("ADALORA config field '") + rank + "' must be >= 0, got " +
                                             config[rank].dump());
    config_probability(config, "lora_dropout");
    config_double(config, "lora_alpha");
    config_choice(config, "bias", {"none", "all", "lora_only"});
    const auto& pattern = config["rank_pattern"];
    if (!pattern.is_null()) {
      if (!pattern.is_object())
        fail(ErrorKind::InvalidArgument, "ADALORA config field 'rank_pattern' must be an object of boolean lists");
      const int64_t init_r = config_int(config, "init_r");
      for (auto it = pattern.begin(); it != pattern.end(); ++it) {
        bool booleans = it.value().is_array() && std::all_of(it.value().begin(), it.value().end(),
                                                             [](const nlohmann::json& b) { return b.is_boolean(); });
        if (!booleans || static_cast<int64_t>(it.value().size()) != init_r)
          fail(ErrorKind::InvalidArgument, "ADALORA config field 'rank_pattern' entry '" + it.key() +
                                               "' must list init_r (" + std::to_string(init_r) + ") booleans");
      }
    }
  }

  void add(AdaLoraLayer& layer, const InjectContext& ctx) const override {
    const int64_t init_r = config_int(ctx.config, "init_r");
    int64_t r = init_r;
    // A saved rank pattern sizes the layer to the ranks kept, as PEFT's resize_modules_by_rank_pattern does on load;
    // ranknum stays init_r.
    if (const auto* entry = pattern_for(ctx.config, ctx.key, ctx.adapter))
      r = std::count(entry->begin(), entry->end(), true);
    layer.add(ctx.adapter, r, init_r, config_double(ctx.config, "lora_alpha"), config_double(ctx.config, "lora_dropout"),
              !ctx.config["init_lora_weights"].get<bool>());
  }

 public:
  // PEFT's AdaLoraModel.forward adds orth_reg_weight · mean over A and B of ‖P Pᵀ − I‖_F (A) / ‖Pᵀ P − I‖_F (B) to
  // every loss computed with labels, in eval mode and with adapters disabled too, for its trainable adapter.
  bool loss_term_always() const override { return true; }

  at::Tensor training_loss_term(const NamedLayers& layers, const std::string& adapter,
                                const nlohmann::json& config) const override {
    const double weight = config_double(config, "orth_reg_weight");
    auto ada = adalora_layers(layers, adapter);
    // An adapter loaded for inference is not PEFT's trainable adapter: no regulariser.
    if (weight == 0 || ada.empty() || !ada.front().second->lora_a(adapter).requires_grad()) return at::Tensor();
    at::Tensor sum;
    int64_t count = 0;
    for (const auto& [path, layer] : ada) {
      for (int which = 0; which < 2; ++which) {
        at::Tensor p = which == 0 ? layer->lora_a(adapter) : layer->lora_b(adapter);
        at::Tensor cov = which == 0 ? at::matmul(p, p.t()) : at::matmul(p.t(), p);
        at::Tensor eye = at::eye(cov.size(0), cov.size(1), cov.options());
        at::Tensor norm = at::linalg_vector_norm(cov - eye, 2);
        sum = sum.defined() ? sum + norm : norm;
        ++count;
      }
    }
    return (sum / count) * weight;
  }

  // PEFT's AdaLoraModel.update_and_allocate(global_step) with its RankAllocator: importance is updated before the
  // final phase; at budgeting steps (every deltaT) the triplets with the lowest scores are masked (E = 0) down to the
  // cubic budget and the pattern kept in rank_pattern; at total_step - tfinal the pattern is fixed, and after it the
  // fixed pattern is re-applied each step.
  void after_optimizer_step(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                            int64_t step) const override {
    auto ada = adalora_layers(layers, adapter);
    if (ada.empty()) return;
    const int64_t total = config_int(config, "total_step");
    const int64_t tinit = config_int(config, "tinit");
    const int64_t tfinal = config_int(config, "tfinal");
    const int64_t n = static_cast<int64_t>(ada.size());
    // The budget counts the ranks the layers were created with (PEFT sizes it before any saved pattern shrinks them).
    const int64_t init_budget = config_int(config, "init_r") * n;
    const int64_t target_budget = config_int(config, "target_r") * n;
    auto budget_at = [&](int64_t s) -> std::pair<int64_t, bool> {
      if (s <= tinit) return {init_budget, false};
      if (s > total - tfinal) return {target_budget, true};
      double mul = 1.0 - static_cast<double>(s - tinit) / static_cast<double>(total - tfinal - tinit);
      auto budget = static_cast<int64_t>(static_cast<double>(init_budget - target_budget) * (mul * mul * mul) +
                                         static_cast<double>(target_budget));
      return {budget, s % config_int(config, "deltaT") == 0};
    };
    if (step < total - tfinal) {
      for (auto& [path, layer] : ada)
        layer->update_importance(adapter, config_double(config, "beta1"), config_double(config, "beta2"));
      auto [budget, mask] = budget_at(step);
      if (mask) config["rank_pattern"] = mask_to_budget(ada, adapter, init_budget - budget, step);
    } else if (step == total - tfinal) {
      config["rank_pattern"] = mask_to_budget(ada, adapter, init_budget - budget_at(step).first, step);
      for (auto& [path, layer] : ada) layer->reset_importance(adapter);
    } else {
      at::NoGradGuard no_grad;
      for (auto& [path, layer] : ada) {
        const auto* entry = pattern_for(config, path, adapter);
        at::Tensor e = layer->lora_e(adapter);
        if (!entry || static_cast<int64_t>(entry->size()) != e.size(0)) continue;
        e.masked_fill_(keep_mask(*entry).logical_not().to(e.device()).unsqueeze(-1), 0.0);
      }
    }
  }

  // Pruned ranks leave the file as PEFT's resize_state_dict_by_rank_pattern drops them.
  void to_checkpoint(std::map<std::string, at::Tensor>& tensors, const nlohmann::json& config) const override {
    const auto& pattern = config["rank_pattern"];
    if (!pattern.is_object()) return;
    for (auto it = pattern.begin(); it != pattern.end(); ++it) {
      const std::string prefix = "base_model.model." + pattern_module(it.key(), "");
      at::Tensor keep = keep_mask(it.value());
      const int64_t rank = keep.sum().item<int64_t>();
      for (const char* part : {"lora_E", "lora_A", "lora_B"}) {
        auto found = tensors.find(prefix + "." + part);
        if (found == tensors.end()) continue;
        const int64_t dim = std::string(part) == "lora_B" ? 1 : 0;
        if (found->second.size(dim) != rank && found->second.size(dim) == keep.size(0))
          found->second = found->second.index_select(dim, keep.nonzero().view(-1).to(found->second.device()));
      }
    }
  }

 private:
  nlohmann::json mask_to_budget(const std::vector<std::pair<std::string, AdaLoraLayer*>>& ada, const std::string& adapter,
                                int64_t k, int64_t step) const {
    std::vector<at::Tensor> scores;
    for (const auto& [path, layer] : ada) {
      at::Tensor s = layer->triplet_importance(adapter);
      if (!s.defined())
        fail(ErrorKind::InvalidArgument, "AdaLoRA rank allocation at step " + std::to_string(step) +
                                             " has no importance scores yet: call after_optimizer_step after every "
                                             "optimizer step from step 1, before the gradients are cleared");
      scores.push_back(s);
    }
    at::Tensor all = at::cat(scores);
    // PEFT's kthvalue needs 1 <= k <= n; a budget at or above the ranks present masks nothing, one below zero all.
    at::Tensor threshold;
    if (k > 0) threshold = std::get<0>(at::kthvalue(all, std::min<int64_t>(k, all.numel())));
    nlohmann::json pattern = nlohmann::json::object();
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < ada.size(); ++i) {
      auto* layer = ada[i].second;
      at::Tensor masked = threshold.defined() ? scores[i].le(threshold) : at::zeros_like(scores[i], at::kBool);
      layer->lora_e(adapter).masked_fill_(masked.view({-1, 1}), 0.0);
      nlohmann::json keep = nlohmann::json::array();
      at::Tensor kept = masked.logical_not().to(at::kCPU);
      for (int64_t j = 0; j < kept.numel(); ++j) keep.push_back(kept[j].item<bool>());
      pattern[ada[i].first + ".lora_E"] = keep;
    }
    return pattern;
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<AdaLoraTuner>());

}  // namespace

AdaLoraLayer::AdaLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "ADALORA") {}

bool AdaLoraLayer::has_adapter(const std::string& adapter) const { return r_.count(adapter) > 0; }

void AdaLoraLayer::add(const std::string& adapter, int64_t r, int64_t ranknum, double lora_alpha, double dropout,
                       bool random_init) {
  if (r < 0) fail(ErrorKind::InvalidArgument, "ADALORA rank must be >= 0, got " + std::to_string(r));
  at::NoGradGuard no_grad;
  at::Tensor w = base_layer()->named_parameters(false)["weight"];
  auto options = w.options().requires_grad(false);
  at::Tensor a = at::randn({r, shape_.in_features}, options);
  at::Tensor e = at::randn({r, 1}, options);
  at::Tensor b = at::randn({shape_.out_features, r}, options);
  if (!random_init) {
    e.zero_();
    a.normal_(0.0, 0.02);
    b.normal_(0.0, 0.02);
  }
  lora_A_->put_parameter(adapter, a);
  lora_E_->put_parameter(adapter, e);
  lora_B_->put_parameter(adapter, b);
  r_[adapter] = r;
  // PEFT's scaling is lora_alpha itself (r when alpha <= 0); the division by the rank is ranknum's.
  scaling_[adapter] = lora_alpha > 0 ? lora_alpha : static_cast<double>(r);
  dropout_[adapter] = dropout;
  ranknum_[adapter] = at::full({1}, static_cast<double>(ranknum), options);
  importance_.erase(adapter);
}

at::Tensor AdaLoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor a = lora_a(adapter);
  at::Tensor input = x.to(a.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor delta = at::matmul(at::matmul(input, (a * lora_e(adapter)).t()), lora_b(adapter).t());
  delta = delta * scaling_.at(adapter) / (ranknum_.at(adapter) + 1e-5);
  // PEFT adds in place: computed in the promoted type, stored in the result's.
  return (result + delta).to(result.scalar_type());
}

at::Tensor AdaLoraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor ba = at::matmul(lora_b(adapter), lora_a(adapter) * lora_e(adapter));
  if (shape_.fan_in_fan_out) ba = ba.t();
  return ba * scaling_.at(adapter) / (ranknum_.at(adapter) + 1e-5);
}

void AdaLoraLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
  ranknum_.erase(adapter);
  importance_.erase(adapter);
}

void AdaLoraLayer::update_importance(const std::string& adapter, double beta1, double beta2) {
  at::NoGradGuard no_grad;
  std::array<at::Tensor, 3> params = {lora_a(adapter), lora_e(adapter), lora_b(adapter)};
  auto& state = importance_[adapter];
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    if (!p.grad().defined())
      fail(ErrorKind::InvalidArgument, "AdaLoRA rank allocation needs the gradients of the step: call "
                                       "after_optimizer_step before the gradients are cleared");
    at::Tensor ipt = (p * p.grad()).abs();
    Importance& s = state[i];
    if (!s.smoothed.defined()) {
      s.smoothed = at::zeros_like(p);
      s.uncertainty = at::zeros_like(p);
    }
    s.smoothed = s.smoothed * beta1 + ipt * (1.0 - beta1);
    s.uncertainty = s.uncertainty * beta2 + (ipt - s.smoothed).abs() * (1.0 - beta2);
  }
}

at::Tensor AdaLoraLayer::triplet_importance(const std::string& adapter) const {
  auto it = importance_.find(adapter);
  if (it == importance_.end() || !it->second[0].smoothed.defined()) return at::Tensor();
  const auto& s = it->second;
  at::Tensor score_a = (s[0].smoothed * s[0].uncertainty).mean(1, true);
  at::Tensor score_e = s[1].smoothed * s[1].uncertainty;
  at::Tensor score_b = (s[2].smoothed * s[2].uncertainty).mean(0, false).view({-1, 1});
  return score_e.view(-1) + at::cat({score_a, score_b}, 1).sum(1);
}

}  // namespace peft4j::tuners
