// BD-LoRA as PEFT 0.21's BdLoraLinearVariant and BlockDiagonalLinear (peft/tuners/lora/variants.py).
#include "peft4j/tuners/lora_bdlora.h"

#include <algorithm>
#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora.h"

namespace peft4j::tuners {

BlockDiagonalLinear::BlockDiagonalLinear(int64_t in_features, int64_t out_features, int64_t nblocks)
    : in_features_(in_features), out_features_(out_features), nblocks_(nblocks) {
  if (in_features % nblocks != 0 || out_features % nblocks != 0)
    fail(ErrorKind::InvalidArgument, "BD-LoRA (use_bdlora) field 'nblocks' = " + std::to_string(nblocks) +
                                         " must divide both sides of the block-diagonal factor (" +
                                         std::to_string(in_features) + " in, " + std::to_string(out_features) + " out)");
  weight = register_parameter("weight", at::zeros({out_features, in_features / nblocks}));
}

at::Tensor BlockDiagonalLinear::forward(const at::Tensor& x) {
  auto first_dims = x.sizes().vec();
  first_dims.pop_back();
  at::Tensor flat = x.reshape({-1, x.size(-1)});
  const int64_t m = flat.size(1) / nblocks_, n = out_features_ / nblocks_;
  at::Tensor out = at::einsum("bim,inm->bin", {flat.reshape({flat.size(0), nblocks_, m}), weight.view({nblocks_, n, m})});
  first_dims.push_back(-1);
  return out.reshape(first_dims);
}

at::Tensor BlockDiagonalLinear::as_matrix() const { return at::block_diag(weight.chunk(nblocks_, 0)); }

namespace {

const nlohmann::json kDefaults = {{"target_modules_bd_a", nullptr}, {"target_modules_bd_b", nullptr}, {"nblocks", 1},
                                  {"match_strict", true}};

at::Tensor factor(const torch::nn::Module& m) {
  if (auto* bd = dynamic_cast<const BlockDiagonalLinear*>(&m)) return bd->as_matrix();
  return m.named_parameters(false)["weight"];
}

std::vector<std::string> patterns(const nlohmann::json& sub, const std::string& field) {
  const auto& v = sub[field];
  if (v.is_null()) return {};
  if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const nlohmann::json& p) { return p.is_string(); }))
    fail(ErrorKind::InvalidArgument, "LORA config field 'use_bdlora." + field + "' must be a list of module names, got " +
                                         v.dump());
  return v.get<std::vector<std::string>>();
}

class BdLoraVariant : public LoraVariant {
 public:
  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    at::Tensor h = models::forward_module(layer.lora_A_module(adapter), layer.dropped(adapter, x));
    return result + models::forward_module(layer.lora_B_module(adapter), h) * layer.scaling(adapter);
  }

  // The blocks laid out as plain LoRA factors, B·A computed in f32 on CPU for low precision, as PEFT does.
  at::Tensor delta_weight(const LoraLayer& layer, const std::string& adapter) const override {
    at::Tensor a = factor(layer.lora_A_module(adapter));
    at::Tensor b = factor(layer.lora_B_module(adapter));
    const auto dtype = layer.weight().scalar_type();
    if (upcast_on_cpu(layer.weight())) {
      a = a.to(at::kFloat);
      b = b.to(at::kFloat);
    }
    at::Tensor ba = at::matmul(b, a);
    return ((layer.fan_in_fan_out() ? ba.t() : ba) * layer.scaling(adapter)).to(dtype);
  }
};

std::shared_ptr<LoraVariant> make(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                                  const std::string& key, bool initialise) {
  const nlohmann::json& sub = config["use_bdlora"];
  if (layer.fan_in_fan_out())
    fail(ErrorKind::Unsupported, "BD-LoRA (use_bdlora) wraps nn.Linear layers only; '" + key + "' is a GPT-2 Conv1D "
                                 "(PEFT reads base_layer.in_features, which Conv1D lacks)");
  auto has = [&](const std::string& field) {
    for (const auto& p : patterns(sub, field))
      if (key.find(p) != std::string::npos) return true;
    return false;
  };
  const bool bd_a = has("target_modules_bd_a"), bd_b = has("target_modules_bd_b");
  if (bd_a && bd_b)
    fail(ErrorKind::InvalidArgument, "BD-LoRA (use_bdlora): target '" + key + "' matches both A and B block-diagonal "
                                     "patterns");
  if (sub["match_strict"].get<bool>() && !bd_a && !bd_b)
    fail(ErrorKind::InvalidArgument, "BD-LoRA (use_bdlora): target '" + key + "' matches neither A nor B block-diagonal "
                                     "patterns (set use_bdlora.match_strict false to mix LoRA and BD-LoRA)");
  const int64_t nblocks = sub["nblocks"].get<int64_t>();
  const int64_t r = layer.rank(adapter);
  const auto options = at::TensorOptions().dtype(layer.weight().scalar_type()).device(layer.weight().device());
  at::NoGradGuard no_grad;
  if (bd_a) {
    // torch.nn.init.kaiming_uniform_ with its defaults (a = 0): U(-sqrt(6 / fan_in), sqrt(6 / fan_in)).
    auto a = std::make_shared<BlockDiagonalLinear>(layer.in_features(), r, nblocks);
    a->to(options.device(), options.dtype().toScalarType());
    const double bound = std::sqrt(6.0 / static_cast<double>(a->weight.size(1)));
    if (initialise) a->weight.uniform_(-bound, bound);
    layer.replace_lora_A(adapter, a);
  } else if (bd_b) {
    auto b = std::make_shared<BlockDiagonalLinear>(r, layer.out_features(), nblocks);
    b->to(options.device(), options.dtype().toScalarType());
    layer.replace_lora_B(adapter, b);
  }
  return std::make_shared<BdLoraVariant>();
}

void validate(nlohmann::json& config) {
  nlohmann::json& sub = config["use_bdlora"];
  auto a = patterns(sub, "target_modules_bd_a"), b = patterns(sub, "target_modules_bd_b");
  for (const auto& p : a)
    if (std::count(b.begin(), b.end(), p))
      fail(ErrorKind::InvalidArgument, "LORA config field 'use_bdlora': module pattern '" + p + "' is in both "
                                       "target_modules_bd_a and target_modules_bd_b");
  if (!sub["nblocks"].is_number_integer() || sub["nblocks"].get<int64_t>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'use_bdlora.nblocks' must be a positive integer, got " +
                                         sub["nblocks"].dump());
  if (!sub["match_strict"].is_boolean())
    fail(ErrorKind::InvalidArgument, "LORA config field 'use_bdlora.match_strict' must be true or false, got " +
                                         sub["match_strict"].dump());
}

[[maybe_unused]] const bool registered = register_lora_variant({"use_bdlora", kDefaults, validate, make});

}  // namespace

}  // namespace peft4j::tuners
