#include "peft4j/tuners/parameter_delta.h"

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstring>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"

namespace peft4j::tuners {

// ---- ParameterDeltaLayer -----------------------------------------------------------------------------------

ParameterDeltaLayer::ParameterDeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                                         const std::string& method)
    : AdapterLayer(base, std::move(state)) {
  if (!is_module_kind(*base, kLinear | kConv1D | kEmbedding))
    fail(ErrorKind::Unsupported, method + " wraps " + describe_module_kinds(kLinear | kConv1D | kEmbedding) + " only");
}

at::Tensor ParameterDeltaLayer::base_parameter(const std::string& name) const {
  auto params = base_layer()->named_parameters(false);
  const auto* p = params.find(name);
  return p ? *p : at::Tensor();
}

at::Tensor ParameterDeltaLayer::adapted_parameter(const std::string& name) {
  at::Tensor value = base_parameter(name);
  if (!value.defined()) return value;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) value = adapted(adapter, name, value);
  return value;
}

at::Tensor ParameterDeltaLayer::adapted_forward(const at::Tensor& x) {
  return run(x, adapted_parameter("weight"), adapted_parameter("bias"));
}

at::Tensor ParameterDeltaLayer::apply(const at::Tensor& x, const at::Tensor&, const std::string& adapter) {
  at::Tensor bias = base_parameter("bias");
  return run(x, adapted(adapter, "weight", base_parameter("weight")),
             bias.defined() ? adapted(adapter, "bias", bias) : bias);
}

at::Tensor ParameterDeltaLayer::run(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const {
  const torch::nn::Module& base = *base_layer();
  if (dynamic_cast<const torch::nn::LinearImpl*>(&base)) return at::linear(x, weight, bias);
  if (const auto* conv = dynamic_cast<const models::Conv1DImpl*>(&base)) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = conv->out_features();
    at::Tensor flat = x.reshape({-1, conv->in_features()});
    return (bias.defined() ? at::addmm(bias, flat, weight) : flat.mm(weight)).view(shape);
  }
  const auto& options = dynamic_cast<const torch::nn::EmbeddingImpl&>(base).options;
  return at::embedding(weight, x, options.padding_idx().value_or(-1), options.scale_grad_by_freq(), options.sparse());
}

// The parameters before the merge are kept, so that unmerging restores them bit for bit whatever the method computes.
// Merging takes the adapter as evaluation sees it (diff pruning's deterministic gates).
void ParameterDeltaLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  const bool training = is_training();
  eval();
  struct Restore {
    ParameterDeltaLayer& layer;
    bool training;
    ~Restore() { layer.train(training); }
  } restore{*this, training};
  for (const char* name : {"weight", "bias"}) {
    at::Tensor p = base_parameter(name);
    if (!p.defined()) continue;
    at::Tensor merged = adapted(adapter, name, p);
    if (merged.unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) continue;
    before_merge_[adapter][name] = p.detach().clone();
    p.copy_(merged);
  }
}

void ParameterDeltaLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  auto it = before_merge_.find(adapter);
  if (it == before_merge_.end()) return;
  for (const auto& [name, value] : it->second) base_parameter(name).copy_(value);
  before_merge_.erase(it);
}

// ---- Base fingerprints -------------------------------------------------------------------------------------

const torch::nn::Module& unwrapped_module(models::Model& model, const std::string& path) {
  auto module = module_at(model, path);
  if (const auto* layer = dynamic_cast<const AdapterLayer*>(module.get())) return *layer->base_layer();
  return *module;
}

std::string parameter_fingerprint(const at::Tensor& value) {
  at::Tensor bits = value.detach().to(at::kCPU).to(at::kBFloat16).contiguous();
  uint64_t hash = 14695981039346656037ull;
  auto mix = [&hash](const unsigned char* bytes, size_t n) {
    for (size_t i = 0; i < n; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  };
  for (int64_t size : bits.sizes()) mix(reinterpret_cast<const unsigned char*>(&size), sizeof size);
  mix(static_cast<const unsigned char*>(bits.data_ptr()), static_cast<size_t>(bits.numel()) * 2);
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, hash >>= 4) out[static_cast<size_t>(i)] = digits[hash & 15];
  return out;
}

nlohmann::json base_fingerprints(const nlohmann::json& config, models::Model& model,
                                 const std::function<bool(const torch::nn::Module&)>& wrappable,
                                 const std::function<std::vector<std::string>(const torch::nn::Module&)>& parameters) {
  const std::string type = config.value("peft_type", std::string("adapter"));
  // As PeftModel::add_adapter: modules inside existing adapter layers are never targets themselves.
  std::vector<std::string> layer_paths;
  for (const auto& item : model.named_modules("", false))
    if (dynamic_cast<const AdapterLayer*>(item.value().get())) layer_paths.push_back(item.key() + ".");
  nlohmann::json found = nlohmann::json::object();
  for (const auto& path : find_target_modules(model, config, wrappable)) {
    bool inside = false;
    for (const auto& l : layer_paths) inside = inside || path.compare(0, l.size(), l) == 0;
    if (inside) continue;
    const torch::nn::Module& module = unwrapped_module(model, path);
    auto params = module.named_parameters(false);
    for (const auto& name : parameters(module))
      if (const auto* p = params.find(name); p && p->defined()) found[path + "." + name] = parameter_fingerprint(*p);
  }
  nlohmann::json out = config;
  const nlohmann::json recorded = config.value("base_fingerprints", nlohmann::json());
  if (recorded.is_null()) {
    out["base_fingerprints"] = found;
    return out;
  }
  if (!recorded.is_object())
    fail(ErrorKind::InvalidArgument, type + " config field 'base_fingerprints' must be an object (parameter: fingerprint)");
  for (auto it = recorded.begin(); it != recorded.end(); ++it) {
    if (!found.contains(it.key()))
      fail(ErrorKind::InvalidArgument, "the " + type + " adapter was made for a base model whose parameter '" + it.key() +
                                           "' it changes; this " + model.model_type() +
                                           " model has no such targeted parameter");
    if (found[it.key()] != *it)
      fail(ErrorKind::InvalidArgument,
           "the " + type + " adapter was made for another base model: parameter '" + it.key() + "' differs (fingerprint " +
               found[it.key()].get<std::string>() + ", the adapter's " + it->dump() + ")");
  }
  for (auto it = found.begin(); it != found.end(); ++it)
    if (!recorded.contains(it.key()))
      fail(ErrorKind::InvalidArgument, "the " + type + " adapter was made for another base model: it does not change "
                                       "the targeted parameter '" + it.key() + "' of this one");
  return out;
}

// ---- Sparse selections -------------------------------------------------------------------------------------

namespace {

// The float whose bits are `bits`: for non-negative floats the order of the bits is the order of the values.
float from_bits(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

std::vector<at::Tensor> select_entries(const std::vector<at::Tensor>& scores, int64_t k, bool smallest) {
  int64_t total = 0;
  std::vector<at::Tensor> values;
  for (const auto& s : scores) {
    values.push_back(s.detach().to(at::kFloat).reshape(-1));
    if (!at::isfinite(values.back()).all().item<bool>() || values.back().lt(0).any().item<bool>())
      fail(ErrorKind::Numerical, "scores for a sparse selection must be finite and non-negative");
    total += s.numel();
  }
  if (k < 0 || k > total)
    fail(ErrorKind::InvalidArgument, "cannot select " + std::to_string(k) + " of " + std::to_string(total) + " entries");
  // How many entries lie beyond the value with bits `t` in the selection's direction (or at it, when inclusive).
  auto beyond = [&](int64_t t, bool inclusive) {
    const float v = from_bits(static_cast<int32_t>(t));
    int64_t n = 0;
    for (const auto& f : values)
      n += (smallest ? (inclusive ? f.le(v) : f.lt(v)) : (inclusive ? f.ge(v) : f.gt(v))).sum().item<int64_t>();
    return n;
  };
  // The threshold t: the k-th entry in the selection's order has the value with bits t.
  int64_t lo = 0, hi = 0x7f800000;  // +0.0 .. +inf
  while (lo < hi) {
    if (smallest) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (beyond(mid, true) >= k) hi = mid; else lo = mid + 1;
    } else {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (beyond(mid, true) >= k) lo = mid; else hi = mid - 1;
    }
  }
  const float t = from_bits(static_cast<int32_t>(lo));
  int64_t ties = k > 0 ? k - beyond(lo, false) : 0;  // entries equal to t still to take, first ones first
  std::vector<at::Tensor> out;
  for (const auto& f : values) {
    at::Tensor chosen = k > 0 ? (smallest ? f.lt(t) : f.gt(t)) : at::zeros_like(f, at::kBool);
    if (ties > 0) {
      at::Tensor equal = f.eq(t).nonzero().view(-1);
      const int64_t take = std::min<int64_t>(ties, equal.numel());
      chosen.index_fill_(0, equal.slice(0, 0, take), true);
      ties -= take;
    }
    out.push_back(chosen.nonzero().view(-1));
  }
  return out;
}

at::Tensor scatter_entries(const at::Tensor& indices, const at::Tensor& values, at::IntArrayRef shape) {
  at::Tensor dense = at::zeros({c10::multiply_integers(shape)}, values.options());
  return dense.index_put({indices.to(values.device(), at::kLong)}, values).view(shape);
}

std::string checkpoint_prefix(const std::string& path) { return "base_model.model." + path + "."; }

}  // namespace peft4j::tuners
