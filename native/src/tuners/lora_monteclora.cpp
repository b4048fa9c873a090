// MonteCLoRA as PEFT 0.21's MontecloraLinearVariant and MontecloraSampler (peft/tuners/lora/variants.py,
// monteclora.py).
#include "peft4j/tuners/lora_monteclora.h"

#include <limits>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

MontecloraSampler::MontecloraSampler(int64_t in_features, int64_t out_features, int64_t num_samples, bool use_entropy,
                                     double dirichlet_prior, double sample_scaler, double kl_loss_weight,
                                     const at::TensorOptions& options, bool initialise)
    : in_features_(in_features),
      out_features_(out_features),
      num_samples_(num_samples),
      use_entropy_(use_entropy),
      dirichlet_prior_(dirichlet_prior),
      sample_scaler_(sample_scaler),
      kl_loss_weight_(kl_loss_weight) {
  auto o = options.requires_grad(false);
  std_prior = register_parameter("std_prior", initialise ? at::rand({out_features}, o) : at::zeros({out_features}, o));
  expert_weights_prior =
      register_parameter("expert_weights_prior", initialise ? at::rand({num_samples}, o) : at::zeros({num_samples}, o));
  gaussian_var_prior = register_buffer("gaussian_var_prior", at::eye(out_features, o));
  expert_weights = register_buffer("expert_weights", at::ones({num_samples}, o) / static_cast<double>(num_samples));
}

void MontecloraSampler::record(at::Tensor& buffer, at::Tensor& last, const at::Tensor& drawn) {
  at::NoGradGuard no_grad;
  buffer.copy_(drawn);
  last = drawn;
}

std::pair<at::Tensor, at::Tensor> MontecloraSampler::sample(const at::Tensor& z_mvn, const at::Tensor& z_wishart,
                                                            const at::Tensor& z_dirichlet) {
  const auto options = std_prior.options();
  at::Tensor std = at::diag(std_prior.exp());
  // Wishart reparameterisation: the diagonal of std·z·stdᵀ, at least 1e-3.
  at::Tensor gaussian_var = at::diag(at::matmul(at::matmul(std, z_wishart.to(options)), std.t()).diag().clamp_min(1e-3));
  // PEFT's `self.gaussian_var_prior = gaussian_var`: the buffer takes the draw, and a variational loss taken after
  // this forward reaches std_prior through it, as through PEFT's buffer (which holds the graph).
  record(gaussian_var_prior, last_gaussian_var_, gaussian_var);
  // Multivariate reparameterisation (Cholesky in f32, as PEFT forces it).
  at::Tensor l = at::linalg_cholesky(gaussian_var.to(at::kFloat)).to(gaussian_var.scalar_type());
  at::Tensor variation = sample_scaler_ * at::nan_to_num(at::einsum("eio,op->eip", {z_mvn.to(options), l}), 1e-3);
  // Dirichlet approximation by a normal in log space around alpha = exp(expert_weights_prior).
  const double eps = 1e-6;
  at::Tensor alpha = expert_weights_prior.exp().clamp_min(eps);
  at::Tensor mu = alpha.log() - alpha.log().mean();
  const double n = static_cast<double>(num_samples_);
  at::Tensor diag_term = ((1 / alpha) * (1 - 2 / n) + (1 / (n * n)) * (1 / alpha).sum()).clamp_min(eps);
  at::Tensor sigma = at::diag(diag_term) + eps * at::eye(num_samples_, options);
  at::Tensor chol = at::linalg_cholesky(sigma.to(at::kFloat)).to(sigma.scalar_type());
  at::Tensor weights = at::softmax(at::matmul(chol, z_dirichlet.to(options)) + mu, -1);
  record(expert_weights, last_expert_weights_, weights);
  return {variation, weights};
}

std::pair<at::Tensor, at::Tensor> MontecloraSampler::forward() {
  const auto options = std_prior.options().requires_grad(false);
  at::Tensor z_mvn = at::randn({num_samples_, in_features_, out_features_}, options);
  at::Tensor z_dirichlet = at::randn({num_samples_}, options);
  // Bartlett decomposition of Wishart(df = r, scale I): L with sqrt(chi2(r - i)) on the diagonal, N(0, 1) below it.
  const int64_t p = out_features_;
  at::Tensor df = at::full({p}, static_cast<double>(p), at::TensorOptions().dtype(at::kFloat)) -
                  at::arange(p, at::TensorOptions().dtype(at::kFloat));
  at::Tensor chi2 = at::_standard_gamma(df / 2) * 2;
  at::Tensor lower = at::diag(chi2.sqrt().clamp_min(std::numeric_limits<float>::epsilon()));
  at::Tensor below = at::tril_indices(p, p, -1);
  lower.index_put_({below[0], below[1]}, at::randn({p * (p - 1) / 2}, lower.options()));
  at::Tensor z_wishart = at::matmul(lower, lower.t());
  return sample(z_mvn, z_wishart.to(options), z_dirichlet);
}

std::pair<at::Tensor, at::Tensor> MontecloraSampler::variational_loss() const {
  if (!is_training()) return {at::zeros({}, std_prior.options()), at::zeros({}, std_prior.options())};
  const double n = static_cast<double>(num_samples_), p = static_cast<double>(out_features_);
  auto gamma = [](const at::Tensor& x) { return x.lgamma().exp(); };
  at::Tensor alpha2 = expert_weights_prior.exp();
  at::Tensor alpha1 = at::full({num_samples_}, dirichlet_prior_, alpha2.options());
  at::Tensor kl_dirichlet = (gamma(alpha2.sum()) / gamma(alpha1.sum())).log() + (gamma(alpha2) / gamma(alpha1)).log().sum() +
                            ((alpha2 - alpha1) * (alpha2.digamma() - alpha2.sum().digamma())).sum();
  at::Tensor std = at::diag(std_prior.exp());
  at::Tensor var = at::diag(at::matmul(std, std.t()).diag());
  at::Tensor kl_wishart = 0.5 * (-var.log().trace() * p + var.trace() * p - p * p);
  at::Tensor clamped = (last_gaussian_var_.defined() ? last_gaussian_var_ : gaussian_var_prior).clamp_min(1e-6);
  at::Tensor kl_gaussian = n * 0.5 * (clamped.trace() - clamped.log().trace() - p);
  at::Tensor weights = last_expert_weights_.defined() ? last_expert_weights_ : expert_weights;
  at::Tensor entropy = use_entropy_ ? weights.pow(2).sum() : at::zeros({}, std_prior.options());
  return {kl_loss_weight_ * (kl_dirichlet + kl_wishart + kl_gaussian), entropy};
}

namespace {

const nlohmann::json kDefaults = {{"num_samples", 8},       {"use_entropy", false},   {"dirichlet_prior", 0.1},
                                  {"sample_scaler", 1e-4},  {"kl_loss_weight", 1e-5}, {"buffer_size", 150}};

class MontecloraVariant : public LoraVariant {
 public:
  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    at::Tensor a = layer.lora_a(adapter);
    at::Tensor input = layer.dropped(adapter, x);
    if (layer.is_training()) {
      auto& sampler = dynamic_cast<MontecloraSampler&>(layer.variant_dict("lora_monteclora_sampler").module(adapter));
      auto [variation, weights] = sampler.forward();
      if (variation.isnan().any().item<bool>() || weights.isnan().any().item<bool>()) {
        warn("Monteclora sampling produced NaNs, using base weights.");
      } else {
        // The weighted mean over the samples of Aᵀ + variation, transposed back.
        a = at::einsum("n,nij->ij", {weights, a.t() + at::nan_to_num(variation, 0.0)}).t();
      }
    }
    return result + models::forward_module(layer.lora_B_module(adapter), at::linear(input, a)) * layer.scaling(adapter);
  }
};

std::shared_ptr<LoraVariant> make(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                                  const std::string&, bool initialise) {
  const nlohmann::json& sub = config["monteclora_config"];
  auto sampler = std::make_shared<MontecloraSampler>(
      layer.in_features(), layer.rank(adapter), sub["num_samples"].get<int64_t>(), sub["use_entropy"].get<bool>(),
      sub["dirichlet_prior"].get<double>(), sub["sample_scaler"].get<double>(), sub["kl_loss_weight"].get<double>(),
      layer.lora_a(adapter).options(), initialise);
  layer.variant_dict("lora_monteclora_sampler").put_module(adapter, sampler);
  return std::make_shared<MontecloraVariant>();
}

void validate(nlohmann::json& config) {
  const nlohmann::json& sub = config["monteclora_config"];
  for (const char* field : {"num_samples", "buffer_size"})
    if (!sub[field].is_number_integer() || sub[field].get<int64_t>() <= 0)
      fail(ErrorKind::InvalidArgument, std::string("LORA config field 'monteclora_config.") + field +
                                           "' must be greater than 0, got " + sub[field].dump());
  if (!sub["dirichlet_prior"].is_number() || sub["dirichlet_prior"].get<double>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'monteclora_config.dirichlet_prior' must be greater than 0, got " +
                                         sub["dirichlet_prior"].dump());
  for (const char* field : {"sample_scaler", "kl_loss_weight"})
    if (!sub[field].is_number())
      fail(ErrorKind::InvalidArgument, std::string("LORA config field 'monteclora_config.") + field +
                                           "' must be a number, got " + sub[field].dump());
  if (!sub["use_entropy"].is_boolean())
    fail(ErrorKind::InvalidArgument, "LORA config field 'monteclora_config.use_entropy' must be true or false, got " +
                                         sub["use_entropy"].dump());
}

[[maybe_unused]] const bool registered = register_lora_variant({"monteclora_config", kDefaults, validate, make});

}  // namespace

at::Tensor monteclora_loss(const PeftModel& model, const std::vector<std::string>& adapters) {
  const std::vector<std::string>& names = adapters.empty() ? model.active_adapters() : adapters;
  at::Tensor total = at::zeros({}, at::kFloat);
  int64_t count = 0;
  for (const auto& [path, base] : model.adapter_layers()) {
    auto* layer = dynamic_cast<LoraLayer*>(base);
    if (!layer) continue;
    for (const auto& name : names) {
      if (!layer->has_adapter(name) || !dynamic_cast<const MontecloraVariant*>(layer->variant(name))) continue;
      const auto& sampler = dynamic_cast<const MontecloraSampler&>(layer->variant_dict("lora_monteclora_sampler").module(name));
      auto [kl, entropy] = sampler.variational_loss();
      total = total.to(kl.device()) + kl + entropy;
      ++count;
    }
  }
  return count ? total / static_cast<double>(count) : total;
}

}  // namespace peft4j::tuners
