// Lily. Sharing is PEFT's _post_injection_hook: the adapted layers of one adapter are grouped by the target_modules
// entry they match (the whole regex for a string; each module on its own for "all-linear", which PEFT expands into full
// module names) and by weight shape; in each group, in module order, every stride_A consecutive layers share the
// first one's lily_A and all share the first one's lily_B. PEFT takes, of several list entries a module ends with,
// whichever its set yields last (an order that varies between Python processes); peft4j takes the longest.
//
// Random state: as PEFT, every layer builds its own three nn.Linear (each drawing its default init from the global
// generator), then draws kaiming-uniform (a = √5) A, router and (init_weights false) B, B otherwise zero; a layer
// that shares its group's A or B then uses the group's tensor instead of its own draw. Saved files hold every
// layer's copy of a shared tensor, as PEFT's state dict does; the parameters train once.
#include "peft4j/tuners/lily.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's LilyConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "LILY"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"stride_A", 1}, {"num_B", 2},
    {"scaling", 1.0}, {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"modules_to_save", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"init_weights", true}};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The target_modules entry that groups the module at `key` (see above).
std::string group_name(const nlohmann::json& targets, const std::string& key) {
  if (targets.is_string()) {
    std::string lower = targets.get<std::string>();
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    return lower == "all-linear" ? key : targets.get<std::string>();
  }
  std::string best;
  for (const auto& t : targets)
    if (ends_with(key, t.get<std::string>()) && t.get<std::string>().size() > best.size()) best = t.get<std::string>();
  return best;
}

std::string shared_key(const char* what, const std::string& key) { return std::string(what) + "/" + key; }

class LilyTuner : public WrappingTuner<LilyLayer> {
 public:
  // init_weights true: every B is zero, so Δh = 0.
  LilyTuner() : WrappingTuner({"LILY", kDefaults, kLinear, {{"init_weights", true}}}) {}

  // The groups: one lily_B per group and one lily_A per stride_A block, handed to the layers by module path. The
  // first layer of each draws into the shared tensor ("<A|B>_draws/<path>" present).
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    const int64_t r = config_int(ctx.config, "r");
    const int64_t num_b = config_int(ctx.config, "num_B");
    const int64_t stride = config_int(ctx.config, "stride_A");
    std::map<std::pair<std::string, std::vector<int64_t>>, std::vector<std::string>> groups;
    std::vector<std::pair<std::string, std::vector<int64_t>>> order;
    for (const auto& key : targets) {
      auto shape = wrapped_linear_shape(*module_at(model, key), "Lily", /*conv1d=*/false);
      auto group = std::make_pair(group_name(ctx.config["target_modules"], key),
                                  std::vector<int64_t>{shape.out_features, shape.in_features});
      if (!groups.count(group)) order.push_back(group);
      groups[group].push_back(key);
    }
    const at::Tensor none;
    for (const auto& group : order) {
      const auto& keys = groups[group];
      const int64_t out = group.second[0], in = group.second[1];
      at::Tensor b = at::zeros({num_b * r, out}, at::kFloat);
      at::Tensor a;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (i % static_cast<size_t>(stride) == 0) {
          a = at::zeros({r, in}, at::kFloat);
          ctx.shared[shared_key("A_draws", keys[i])] = none;
        }
        ctx.shared[shared_key("A", keys[i])] = a;
        ctx.shared[shared_key("B", keys[i])] = b;
      }
      ctx.shared[shared_key("B_draws", keys.front())] = none;
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    if (config_int(config, "stride_A") < 1)
      fail(ErrorKind::InvalidArgument, "LILY config field 'stride_A' must be at least 1, got " + config["stride_A"].dump());
    if (config_int(config, "num_B") < 2)
      fail(ErrorKind::InvalidArgument, "LILY config field 'num_B' must be at least 2 (the router mixes the B experts), "
                                       "got " + config["num_B"].dump());
    config_double(config, "scaling");
    config_bool(config, "init_weights");
  }

  void add(LilyLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.shared.at(shared_key("A", ctx.key)),
              ctx.shared.count(shared_key("A_draws", ctx.key)) > 0, ctx.shared.at(shared_key("B", ctx.key)),
              ctx.shared.count(shared_key("B_draws", ctx.key)) > 0, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LilyTuner>());

// An nn.Linear without bias (PEFT's lily_A / lily_B / lily_router), drawing its default init as nn.Linear does.
torch::nn::Linear linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); }

void kaiming(const at::Tensor& t) { torch::nn::init::kaiming_uniform_(t, std::sqrt(5.0)); }

}  // namespace

LilyLayer::LilyLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "Lily", /*conv1d=*/false);
  lily_A_ = register_module("lily_A", std::make_shared<AdapterDict>());
  lily_B_ = register_module("lily_B", std::make_shared<AdapterDict>());
  lily_router_ = register_module("lily_router", std::make_shared<AdapterDict>());
}

void LilyLayer::add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& shared_a, bool draws_a,
                    const at::Tensor& shared_b, bool draws_b, bool initialise) {
  Settings s;
  s.r = config_int(config, "r");
  s.num_B = config_int(config, "num_B");
  s.scaling = config_double(config, "scaling");
  auto a = linear(shape_.in_features, s.r);
  auto b = linear(shape_.out_features, s.num_B * s.r);
  auto router = linear(s.r, s.num_B);
  {
    at::NoGradGuard no_grad;
    if (initialise) {
      kaiming(a->weight);
      kaiming(router->weight);
      if (config_bool(config, "init_weights")) {
        b->weight.zero_();
      } else {
        kaiming(b->weight);
      }
    }
    if (draws_a) shared_a.copy_(a->weight);
    if (draws_b) shared_b.copy_(b->weight);
  }
  auto options = linear_weight(*base_layer()).options();
  // The group's tensors, moved to the base weight's device and dtype once (by the layer that draws them), held by a
  // module of their own in place of this layer's draw.
  auto shared = [&](const at::Tensor& t, bool draws) {
    if (draws) t.set_data(t.to(options.device(), options.dtype().toScalarType()));
    auto holder = std::make_shared<torch::nn::Module>();
    holder->register_parameter("weight", t);
    return holder;
  };
  router->to(options.device(), options.dtype().toScalarType());
  lily_A_->put_module(adapter, shared(shared_a, draws_a));
  lily_B_->put_module(adapter, shared(shared_b, draws_b));
  lily_router_->put_module(adapter, router.ptr());
  settings_[adapter] = s;
}

at::Tensor LilyLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const Settings& s = settings_.at(adapter);
  at::Tensor a = lily_A_->module(adapter).named_parameters(false)["weight"];
  at::Tensor b = lily_B_->module(adapter).named_parameters(false)["weight"];
  at::Tensor router = lily_router_->module(adapter).named_parameters(false)["weight"];
  at::Tensor hidden = at::linear(x.to(a.scalar_type()), a);
  // The router's distribution over the B experts, averaged over every token of the forward (padding included).
  at::Tensor weights = at::softmax(at::linear(hidden, router), -1).reshape({-1, s.num_B}).mean(0);
  at::Tensor combined = at::einsum("e,eio->io", {weights, b.reshape({s.num_B, s.r, shape_.out_features})});
  return result + (at::matmul(hidden, combined) * s.scaling).to(result.scalar_type());
}

void LilyLayer::forget_adapter(const std::string& adapter) { settings_.erase(adapter); }

}  // namespace peft4j::tuners
