// KaSA as PEFT 0.21's KasaLinearVariant (peft/tuners/lora/variants.py) and LoraModel._get_kasa_loss.
#include "peft4j/tuners/lora_kasa.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::tuners {

namespace {

const nlohmann::json kDefaults = {{"beta", 1e-4}, {"gamma", 1e-3}};

bool uses_kasa(const nlohmann::json& config) {
  return config.contains("kasa_config") && lora_field_is_set(config["kasa_config"]);
}

class KasaVariant : public LoraVariant {
 public:
  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    at::Tensor after_a = models::forward_module(layer.lora_A_module(adapter), layer.dropped(adapter, x));
    at::Tensor diag = layer.variant_dict("lora_diag").parameter(adapter);
    return result + models::forward_module(layer.lora_B_module(adapter), after_a * diag) * layer.scaling(adapter);
  }

  at::Tensor delta_weight(const LoraLayer& layer, const std::string& adapter) const override {
    at::Tensor a = layer.lora_a(adapter), b = layer.lora_b(adapter);
    at::Tensor diag = layer.variant_dict("lora_diag").parameter(adapter);
    const auto dtype = b.scalar_type();
    if (upcast_on_cpu(b)) {
      a = a.to(at::kFloat);
      b = b.to(at::kFloat);
      diag = diag.to(at::kFloat);
    }
    return (at::matmul(b * diag, a) * layer.scaling(adapter)).to(dtype);
  }
};

// The base weight becomes its rank-(k − r) SVD approximation: the r smallest singular components are dropped.
void truncate_base_weight(LoraLayer& layer, int64_t r, const std::string& key) {
  at::Tensor w = layer.weight();
  const int64_t k = std::min(w.size(0), w.size(1));
  if (r >= k)
    fail(ErrorKind::InvalidArgument, "KaSA (kasa_config) needs r (" + std::to_string(r) + ") smaller than min(in_features, "
                                     "out_features) (" + std::to_string(k) + ") of '" + key + "', so that a singular "
                                     "component of the base weight is kept");
  at::NoGradGuard no_grad;
  auto [u, s, vh] = at::linalg_svd(w.detach().to(at::kFloat), /*full_matrices=*/false);
  const int64_t keep = k - r;
  at::Tensor truncated = at::matmul(u.slice(1, 0, keep) * s.slice(0, 0, keep), vh.slice(0, 0, keep));
  w.copy_(truncated.to(w.scalar_type()));
}

std::shared_ptr<LoraVariant> make(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                                  const std::string& key, bool initialise) {
  if (layer.fan_in_fan_out())
    fail(ErrorKind::Unsupported, "KaSA (kasa_config) does not support fan_in_fan_out layers such as GPT-2's Conv1D ('" +
                                     key + "'), as PEFT refuses them; target nn.Linear layers");
  const int64_t r = layer.rank(adapter);
  at::Tensor a = layer.lora_a(adapter);
  // randn as PEFT draws it: B starts at zero (init_lora_weights true), so the update is zero whatever the diagonal.
  at::Tensor diag = initialise ? at::randn({r}, a.options().requires_grad(false)) : at::zeros({r}, a.options());
  truncate_base_weight(layer, r, key);
  layer.variant_dict("lora_diag").put_parameter(adapter, diag);
  return std::make_shared<KasaVariant>();
}

void validate(nlohmann::json& config) {
  for (const char* field : {"beta", "gamma"}) {
    const auto& v = config["kasa_config"][field];
    if (!v.is_number() || v.get<double>() < 0)
      fail(ErrorKind::InvalidArgument, std::string("LORA config field 'kasa_config.") + field +
                                           "' must be a non-negative number, got " + v.dump());
  }
}

// PEFT's _check_new_adapter_config: the base weight other adapters see depends on whether a KaSA adapter came first.
void check_with_existing(const nlohmann::json& config, const std::map<std::string, nlohmann::json>& existing) {
  const bool kasa = uses_kasa(config);
  for (const auto& [name, other] : existing)
    if (uses_kasa(other) != kasa)
      fail(ErrorKind::InvalidArgument,
           std::string("KaSA cannot be combined with adapters that don't use KaSA, since KaSA modifies the base weights: "
                       "the new adapter ") + (kasa ? "uses" : "does not use") + " KaSA but adapter '" + name + "' " +
               (kasa ? "does not" : "does"));
}

[[maybe_unused]] const bool registered = [] {
  LoraVariantSpec spec{"kasa_config", kDefaults, validate, make};
  spec.check_with_existing = check_with_existing;
  return register_lora_variant(std::move(spec));
}();

}  // namespace

at::Tensor kasa_loss(const PeftModel& model, const std::vector<std::string>& adapters) {
  const std::vector<std::string>& names = adapters.empty() ? model.active_adapters() : adapters;
  at::Tensor total = at::zeros({}, at::kFloat);
  for (const auto& [path, base] : model.adapter_layers()) {
    auto* layer = dynamic_cast<LoraLayer*>(base);
    if (!layer) continue;
    for (const auto& name : names) {
      if (!layer->has_adapter(name) || !dynamic_cast<const KasaVariant*>(layer->variant(name))) continue;
      const nlohmann::json& sub = model.adapter_config(name)["kasa_config"];
      at::Tensor diag = layer->variant_dict("lora_diag").parameter(name).to(at::kFloat);
      at::Tensor a = layer->lora_a(name).to(at::kFloat), b = layer->lora_b(name).to(at::kFloat);
      at::Tensor eye = at::eye(diag.size(0), diag.options());
      at::Tensor l2 = diag.pow(2).sum();
      at::Tensor l3 = at::linalg_norm(at::matmul(b.t(), b) - eye) + at::linalg_norm(at::matmul(a, a.t()) - eye);
      total = total.to(l2.device()) + sub["beta"].get<double>() * l2 + sub["gamma"].get<double>() * l3;
    }
  }
  return total;
}

}  // namespace peft4j::tuners
