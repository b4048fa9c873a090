// Intrinsic dimension (DID/SAID). Random state: each parameter tensor's projection comes from its own CPU generator,
// seeded with a hash of projection_prng_key and the parameter's name, so a projection does not depend on which other
// tensors are targeted, on the device, or on the global generators; θ starts at zero and λ at one.
#include "peft4j/tuners/intrinsic_dimension.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

namespace {

const char* kType = "INTRINSIC_DIMENSION";

const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"modules_to_save", nullptr},
    {"intrinsic_dimension", 20000}, {"said", true}, {"projection", "fastfood"}, {"projection_prng_key", 0},
    {"base_fingerprints", nullptr}};

const char* kVector = "intrinsic_vector";

// FNV-1a over the key and the parameter's name.
uint64_t projection_seed(int64_t key, const std::string& parameter) {
  uint64_t hash = 14695981039346656037ull;
  auto mix = [&hash](const void* data, size_t n) {
    for (size_t i = 0; i < n; ++i) hash = (hash ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  };
  mix(&key, sizeof key);
  mix(parameter.data(), parameter.size());
  return hash;
}

class IntrinsicTuner : public ParameterDeltaTuner<IntrinsicLayer> {
 public:
  // Every new adapter starts as the identity (θ = 0).
  IntrinsicTuner() : ParameterDeltaTuner({kType, kDefaults, kLinear | kConv1D | kEmbedding, nlohmann::json::object()}) {}

  // θ is shared by every layer: "base_model.intrinsic_vector", d − m numbers with SAID (m scales live in the layers).
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    const int64_t d = config_int(ctx.config, "intrinsic_dimension");
    int64_t tensors = 0;
    for (const auto& path : targets) tensors += static_cast<int64_t>(intrinsic_parameters(unwrapped_module(model, path)).size());
    const int64_t size = config_bool(ctx.config, "said") ? d - tensors : d;
    if (size < 1)
      fail(ErrorKind::InvalidArgument, std::string(kType) + " config field 'intrinsic_dimension' = " +
                                           std::to_string(d) + " leaves no room for θ: SAID spends " +
                                           std::to_string(tensors) + " of it on one scale per adapted tensor");
    const auto& first = unwrapped_module(model, targets.front());
    at::Tensor vector = at::zeros({size}, first.named_parameters(false)["weight"].options().requires_grad(false));
    model_level_dict(tuner_module, kVector)->put_parameter(ctx.adapter, vector);
    ctx.shared[kVector] = vector;
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "intrinsic_dimension");
    config_bool(config, "said");
    config_choice(config, "projection", {"fastfood", "dense", "sparse"});
    config_int(config, "projection_prng_key");
    config_strings(config, "modules_to_save");
  }

  std::vector<std::string> adapted_parameters(const nlohmann::json&, const torch::nn::Module& module) const override {
    return intrinsic_parameters(module);
  }

  void add(IntrinsicLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.shared.at(kVector), ctx.key);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<IntrinsicTuner>());

}  // namespace

std::vector<std::string> intrinsic_parameters(const torch::nn::Module& module) {
  std::vector<std::string> out;
  auto params = module.named_parameters(false);
  for (const char* name : {"weight", "bias"})
    if (const auto* p = params.find(name); p && p->defined()) out.push_back(name);
  return out;
}

at::Tensor walsh_hadamard(const at::Tensor& x) {
  const int64_t n = x.size(0);
  at::Tensor y = x;
  for (int64_t h = 1; h < n; h *= 2) {
    at::Tensor pairs = y.view({-1, 2, h});
    at::Tensor a = pairs.select(1, 0), b = pairs.select(1, 1);
    y = at::stack({a + b, a - b}, 1).view({n});
  }
  return y;
}

IntrinsicProjection::IntrinsicProjection(const std::string& kind, int64_t in, int64_t out, uint64_t seed,
                                         const at::Device& device)
    : kind_(kind), in_(in), out_(out), device_(device) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard no_grad;
  if (kind == "fastfood") {
    length_ = 1;
    while (length_ < std::max(in, out)) length_ *= 2;
    signs_ = at::empty({length_}, at::kFloat).bernoulli_(0.5, generator).mul_(2).sub_(1).to(device);
    permutation_ = at::randperm(length_, generator, at::kLong).to(device);
    gaussian_ = at::empty({length_}, at::kFloat).normal_(0, 1, generator);
    divisor_ = std::sqrt(static_cast<double>(out) * gaussian_.square().sum().item<double>());
    gaussian_ = gaussian_.to(device);
  } else if (kind == "dense") {
    matrix_ = at::empty({out, in}, at::kFloat).normal_(0, 1.0 / std::sqrt(static_cast<double>(out)), generator).to(device);
  } else {
    const double s = std::sqrt(static_cast<double>(out));
    at::Tensor draw = at::empty({out, in}, at::kFloat).uniform_(0, 1, generator);
    at::Tensor kept = draw.lt(1.0 / s);
    at::Tensor where = kept.nonzero();
    // The sign from the same draw: below 1/(2s) negative, above positive.
    at::Tensor sign = draw.masked_select(kept).lt(0.5 / s).to(at::kFloat).mul(-2).add(1);
    rows_ = where.select(1, 0).to(device);
    cols_ = where.select(1, 1).to(device);
    values_ = sign.mul(std::sqrt(s / static_cast<double>(out))).to(device);
  }
}

at::Tensor IntrinsicProjection::operator()(const at::Tensor& x) const {
  if (kind_ == "fastfood") {
    at::Tensor v = at::constant_pad_nd(x.to(at::kFloat), {0, length_ - in_}) * signs_;
    v = walsh_hadamard(v).index_select(0, permutation_) * gaussian_;
    return walsh_hadamard(v).slice(0, 0, out_) / divisor_;
  }
  if (kind_ == "dense") return matrix_.mv(x.to(at::kFloat));
  return at::zeros({out_}, x.options().dtype(at::kFloat)).index_add(0, rows_, values_ * x.to(at::kFloat).index_select(0, cols_));
}

IntrinsicLayer::IntrinsicLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : ParameterDeltaLayer(std::move(base), std::move(state), kType) {
  lambda_ = register_module("intrinsic_lambda", std::make_shared<AdapterDict>());
}

std::vector<std::string> IntrinsicLayer::parameters() const { return intrinsic_parameters(*base_layer()); }

void IntrinsicLayer::add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& vector,
                         const std::string& path) {
  const bool said = config_bool(config, "said");
  adapters_[adapter] = {vector, config_string(config, "projection"),
                        static_cast<uint64_t>(config_int(config, "projection_prng_key")), path, said};
  for (auto it = projections_.begin(); it != projections_.end();)
    it = it->first.first == adapter ? projections_.erase(it) : std::next(it);
  if (said) {
    at::NoGradGuard no_grad;
    lambda_->put_parameter(adapter, at::ones({static_cast<int64_t>(parameters().size())}, vector.options()));
  }
}

const IntrinsicProjection& IntrinsicLayer::projection(const std::string& adapter, const std::string& name) {
  const Adapter& a = adapters_.at(adapter);
  const at::Device device = a.vector.device();
  auto key = std::make_pair(adapter, name);
  auto it = projections_.find(key);
  if (it == projections_.end() || it->second.device() != device) {
    if (it != projections_.end()) projections_.erase(it);
    const std::string parameter = a.path + "." + name;
    it = projections_
             .emplace(key, IntrinsicProjection(a.kind, a.vector.numel(), base_parameter(name).numel(),
                                               projection_seed(static_cast<int64_t>(a.key), parameter), device))
             .first;
  }
  return it->second;
}

at::Tensor IntrinsicLayer::adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) {
  const auto params = parameters();
  auto index = std::find(params.begin(), params.end(), name) - params.begin();
  if (index == static_cast<int64_t>(params.size())) return value;
  const Adapter& a = adapters_.at(adapter);
  at::Tensor delta = projection(adapter, name)(a.vector);
  if (a.said) delta = delta * lambda_->parameter(adapter).select(0, index).to(at::kFloat);
  return value + delta.view(value.sizes()).to(value.scalar_type());
}

void IntrinsicLayer::forget_adapter(const std::string& adapter) {
  adapters_.erase(adapter);
  for (auto it = projections_.begin(); it != projections_.end();)
    it = it->first.first == adapter ? projections_.erase(it) : std::next(it);
}

}  // namespace peft4j::tuners
