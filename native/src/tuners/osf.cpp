// OSF. Random state: the frozen subspace comes from the SVD of the base weight, recomputed whenever the adapter is
// added or loaded (PEFT saves only U_low, S_low and V_low). An SVD fixes each singular pair up to a common sign, and
// everything OSF takes from it does not depend on that sign (the initial low-rank product, the projectors), so a
// loaded adapter computes what PEFT's does. init_weights false draws U_low, S_low, V_low from the global generator
// (torch.randn_like, in that order).
#include "peft4j/tuners/osf.h"

#include <regex>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's OSFConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "OSF"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"effective_rank", nullptr}, {"target_modules", nullptr},
    {"rank_pattern", nullptr}, {"init_weights", true}, {"modules_to_save", nullptr}, {"target_svd_config", nullptr}};

// PEFT's _resolve_rank: null is half the smaller dimension; a float in (0, 1] a fraction of it; anything else is
// truncated to an integer; the result is clamped to [0, min_dim].
int64_t resolve_rank(const nlohmann::json& value, int64_t min_dim, const std::string& field) {
  if (value.is_null()) return min_dim / 2;
  if (!value.is_number())
    fail(ErrorKind::InvalidArgument, "OSF config field '" + field + "' must be an integer, a fraction in (0, 1] or null, "
                                                                      "got " + value.dump());
  int64_t r = 0;
  if (value.is_number_float() && value.get<double>() > 0 && value.get<double>() <= 1)
    r = static_cast<int64_t>(static_cast<double>(min_dim) * value.get<double>());
  else
    r = value.is_number_float() ? static_cast<int64_t>(value.get<double>()) : value.get<int64_t>();
  return std::max<int64_t>(std::min(min_dim, r), 0);
}

class OSFTuner : public WrappingTuner<OSFLayer> {
 public:
  // init_weights true: the trained factors start as the SVD's, so ΔW = 0.
  OSFTuner() : WrappingTuner({"OSF", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    resolve_rank(config["effective_rank"], 1, "effective_rank");
    const nlohmann::json& patterns = config["rank_pattern"];
    if (!patterns.is_null() && !patterns.is_object())
      fail(ErrorKind::InvalidArgument, "OSF config field 'rank_pattern' must be an object, got " + patterns.dump());
    if (patterns.is_object())
      for (auto it = patterns.begin(); it != patterns.end(); ++it) {
        resolve_rank(it.value(), 1, "rank_pattern");
        try {
          std::regex pattern(it.key());
        } catch (const std::regex_error& e) {
          fail(ErrorKind::InvalidArgument, "OSF config field 'rank_pattern': '" + it.key() +
                                               "' is no regular expression (" + e.what() + ")");
        }
      }
    // PEFT's Optional[bool]: only false draws random factors.
    if (!config["init_weights"].is_null()) config_bool(config, "init_weights");
  }

  // effective_rank, or the rank_pattern entry whose regex is found in the module key (re.search).
  void add(OSFLayer& layer, const InjectContext& ctx) const override {
    const LinearShape shape = wrapped_linear_shape(*layer.base_layer(), "OSF", /*conv1d=*/false);
    const int64_t min_dim = std::min(shape.in_features, shape.out_features);
    int64_t rank = resolve_rank(ctx.config["effective_rank"], min_dim, "effective_rank");
    std::string chosen;
    const nlohmann::json patterns = ctx.config["rank_pattern"].is_null() ? nlohmann::json::object() : ctx.config["rank_pattern"];
    for (auto it = patterns.begin(); it != patterns.end(); ++it) {
      if (!std::regex_search(ctx.key, std::regex(it.key()))) continue;
      const int64_t r = resolve_rank(it.value(), min_dim, "rank_pattern");
      // PEFT takes the first matching pattern in the file's order, which a parsed JSON object does not keep.
      if (!chosen.empty() && r != rank)
        fail(ErrorKind::InvalidArgument, "OSF config field 'rank_pattern': patterns '" + chosen + "' and '" + it.key() +
                                             "' both match module '" + ctx.key + "' with different ranks");
      chosen = it.key();
      rank = r;
    }
    const bool random = ctx.config["init_weights"].is_boolean() && !ctx.config["init_weights"].get<bool>();
    layer.add(ctx.adapter, rank, !random, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<OSFTuner>());

// U·diag(S)·V for a factor triple, as PEFT multiplies: (U * S) @ V.
at::Tensor product(const at::Tensor& u, const at::Tensor& s, const at::Tensor& v) { return at::mm(u * s.unsqueeze(0), v); }

}  // namespace

OSFLayer::OSFLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "OSF", /*conv1d=*/false);
  osf_svd_params_ = register_module("osf_svd_params", std::make_shared<AdapterDict>());
  u_low_init_ = register_module("_osf_U_low_init", std::make_shared<AdapterDict>());
  s_low_init_ = register_module("_osf_S_low_init", std::make_shared<AdapterDict>());
  v_low_init_ = register_module("_osf_V_low_init", std::make_shared<AdapterDict>());
  u_high_ = register_module("_osf_U_high", std::make_shared<AdapterDict>());
  v_high_ = register_module("_osf_V_high", std::make_shared<AdapterDict>());
}

void OSFLayer::add(const std::string& adapter, int64_t effective_rank, bool init_weights, bool initialise) {
  if (effective_rank <= 0)
    fail(ErrorKind::InvalidArgument, "OSF config field 'effective_rank' resolves to " + std::to_string(effective_rank) +
                                         " for a " + std::to_string(shape_.out_features) + " × " +
                                         std::to_string(shape_.in_features) + " weight; it must be a positive integer");
  at::Tensor weight = base_weight();
  at::Tensor u, s, vh;
  {
    at::NoGradGuard no_grad;
    std::tie(u, s, vh) = at::linalg_svd(weight.detach().to(at::kFloat), /*full_matrices=*/false);
  }
  const int64_t k = std::min(effective_rank, s.size(0));
  auto part = [&](const at::Tensor& t) { return t.contiguous().to(weight.scalar_type()); };
  at::Tensor u_low = part(u.slice(1, k)), s_low = part(s.slice(0, k)), v_low = part(vh.slice(0, k));
  u_low_init_->put_buffer(adapter, u_low.clone(), /*persistent=*/false);
  s_low_init_->put_buffer(adapter, s_low.clone(), false);
  v_low_init_->put_buffer(adapter, v_low.clone(), false);
  // Where a factor is square its frozen part's projector is I − U_low·U_lowᵀ; where it is not, PEFT keeps the
  // high-rank factor itself to project with.
  if (shape_.out_features > shape_.in_features) u_high_->put_buffer(adapter, part(u.slice(1, 0, k)), false);
  if (shape_.out_features < shape_.in_features) v_high_->put_buffer(adapter, part(vh.slice(0, 0, k)), false);
  if (initialise && !init_weights) {
    at::NoGradGuard no_grad;
    u_low = at::randn_like(u_low);
    s_low = at::randn_like(s_low);
    v_low = at::randn_like(v_low);
  }
  auto params = std::make_shared<torch::nn::Module>();
  std::map<std::string, at::Tensor> trained = {{"U_low", u_low}, {"S_low", s_low}, {"V_low", v_low}};
  for (const char* name : {"S_low", "U_low", "V_low"}) params->register_parameter(name, trained[name].detach().clone());
  // PEFT's gradient hooks: U_low's gradient loses its component in span(U_high), V_low's its component in
  // span(V_high). The frozen factors are read from the layer at each backward (they move with the module); a layer
  // that is gone leaves the gradient as it is.
  std::weak_ptr<AdapterDict> u_high = u_high_, v_high = v_high_, u_init = u_low_init_, v_init = v_low_init_;
  params->named_parameters()["U_low"].register_hook([=](const at::Tensor& grad) -> at::Tensor {
    auto high = u_high.lock();
    auto init = u_init.lock();
    if (!high || !init) return grad;
    if (high->contains(adapter)) {
      at::Tensor h = high->parameter(adapter);
      return grad - at::mm(h, at::mm(h.t(), grad));
    }
    at::Tensor l = init->parameter(adapter);
    return at::mm(l, at::mm(l.t(), grad));
  });
  params->named_parameters()["V_low"].register_hook([=](const at::Tensor& grad) -> at::Tensor {
    auto high = v_high.lock();
    auto init = v_init.lock();
    if (!high || !init) return grad;
    if (high->contains(adapter)) {
      at::Tensor h = high->parameter(adapter);
      return grad - at::mm(at::mm(grad, h.t()), h);
    }
    at::Tensor l = init->parameter(adapter);
    return at::mm(at::mm(grad, l.t()), l);
  });
  osf_svd_params_->put_module(adapter, params);
}

at::Tensor OSFLayer::factor(const std::string& adapter, const std::string& name) const {
  if (name == "U_low_init") return u_low_init_->parameter(adapter);
  if (name == "S_low_init") return s_low_init_->parameter(adapter);
  if (name == "V_low_init") return v_low_init_->parameter(adapter);
  if (name == "U_high") return u_high_->parameter(adapter);
  if (name == "V_high") return v_high_->parameter(adapter);
  return osf_svd_params_->module(adapter).named_parameters(false)[name];
}

at::Tensor OSFLayer::delta_weight(const std::string& adapter) const {
  return product(factor(adapter, "U_low"), factor(adapter, "S_low"), factor(adapter, "V_low")) -
         product(factor(adapter, "U_low_init"), factor(adapter, "S_low_init"), factor(adapter, "V_low_init"));
}

// The low-rank forward: x·ΔWᵀ = (x·V_lowᵀ)·(U_low·S_low)ᵀ − (x·V_low_initᵀ)·(U_low_init·S_low_init)ᵀ, without forming
// ΔW. PEFT concatenates the two products into one rank-2r product; as two products, a fresh adapter's terms are
// bitwise equal, so it is exactly the identity (PEFT's single sum of 2r terms leaves rounding noise there).
at::Tensor OSFLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor u = factor(adapter, "U_low");
  at::Tensor input = x.to(u.scalar_type());
  at::Tensor current = at::linear(at::linear(input, factor(adapter, "V_low")), u * factor(adapter, "S_low").unsqueeze(0));
  at::Tensor initial = at::linear(at::linear(input, factor(adapter, "V_low_init")),
                                  factor(adapter, "U_low_init") * factor(adapter, "S_low_init").unsqueeze(0));
  return result + (current - initial).to(x.scalar_type());
}

// Only the first active adapter acts (PEFT's forward reads active_adapters[0]); none when this layer lacks it.
at::Tensor OSFLayer::adapted_forward(const at::Tensor& x) {
  at::Tensor result = base_forward(x);
  if (state_->active.empty() || !has_adapter(state_->active.front())) return result;
  return apply(x, result, state_->active.front());
}

}  // namespace peft4j::tuners
