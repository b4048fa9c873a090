// MiSS as PEFT 0.21 implements it (tuners/miss). Random state: only init_weights false draws the block (our own
// generator, PEFT's kaiming_uniform(a=√5) bound 1/√out); every other variant starts at zero. The exact values of an
// adapter come from its saved file, as PEFT loads them.
#include "peft4j/tuners/miss.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's MissConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "MISS"},       {"task_type", nullptr},     {"base_model_name_or_path", nullptr},
    {"revision", nullptr},       {"inference_mode", false},  {"auto_mapping", nullptr},
    {"r", 64},                   {"miss_dropout", 0.0},      {"mini_r", 1},
    {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"init_weights", true},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"bias", "none"},
    {"modules_to_save", nullptr}};

MissLayer::Variant variant_of(const nlohmann::json& init_weights) {
  if (init_weights.is_string() && init_weights.get<std::string>() == "bat") return MissLayer::Variant::Bat;
  if (init_weights.is_string() && init_weights.get<std::string>() == "mini") return MissLayer::Variant::Mini;
  return MissLayer::Variant::Balance;
}

class MissTuner : public WrappingTuner<MissLayer> {
 public:
  // init_weights true starts the block at zero: ΔW = 0.
  MissTuner() : WrappingTuner({"MISS", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    config_positive_int(config, "mini_r");
    config_probability(config, "miss_dropout");
    const auto& init = config["init_weights"];
    if (!init.is_boolean() && !(init.is_string() && (init == "bat" || init == "mini")))
      fail(ErrorKind::InvalidArgument, "MISS config field 'init_weights' must be true, false, \"bat\" or \"mini\", got " +
                                           init.dump());
    std::string bias = config_string(config, "bias");
    bool only = bias.size() > 5 && bias.compare(bias.size() - 5, 5, "_only") == 0;
    if (bias != "none" && bias != "all" && !only)
      fail(ErrorKind::InvalidArgument, "MISS config field 'bias' must be \"none\", \"all\" or \"MiSS_only\", got \"" +
                                           bias + "\"");
  }

  void add(MissLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, config_int(ctx.config, "r"), config_int(ctx.config, "mini_r"),
              config_double(ctx.config, "miss_dropout"), ctx.config["init_weights"]);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<MissTuner>());

}  // namespace

MissLayer::MissLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, "MISS wraps Linear modules only");
  in_features_ = linear->weight.size(1);
  out_features_ = linear->weight.size(0);
}

bool MissLayer::has_adapter(const std::string& adapter) const { return miss_block_->contains(adapter); }

at::Tensor MissLayer::weight() const { return base_layer()->named_parameters(false)["weight"]; }

void MissLayer::add(const std::string& adapter, int64_t r, int64_t mini_r, double dropout,
                    const nlohmann::json& init_weights) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "MISS config field 'r' must be a positive integer, got " + std::to_string(r));
  if (r > in_features_)
    fail(ErrorKind::InvalidArgument, "MISS config field 'r' (" + std::to_string(r) + ") must be <= in_features (" +
                                         std::to_string(in_features_) + ")");
  const Variant variant = variant_of(init_weights);
  const bool first = miss_block_->named_parameters(false).is_empty();
  if (!first && variant != variant_)
    fail(ErrorKind::Unsupported, "MISS config field 'init_weights' = " + init_weights.dump() +
                                     ": this layer already holds a MiSS adapter of another variant, which PEFT would "
                                     "run with the first adapter's variant");
  at::NoGradGuard no_grad;
  auto options = weight().options().requires_grad(false);
  at::Tensor block;
  if (variant == Variant::Bat) {
    if (in_features_ % r != 0 || out_features_ % r != 0)
      fail(ErrorKind::InvalidArgument, "MISS init_weights \"bat\" needs in_features (" + std::to_string(in_features_) +
                                           ") and out_features (" + std::to_string(out_features_) +
                                           ") divisible by 'r' (" + std::to_string(r) + ")");
    block = at::zeros({out_features_ / r, r, r}, options);
  } else if (variant == Variant::Mini) {
    if (out_features_ % mini_r != 0)
      fail(ErrorKind::InvalidArgument, "MISS init_weights \"mini\" needs out_features (" +
                                           std::to_string(out_features_) + ") divisible by 'mini_r' (" +
                                           std::to_string(mini_r) + ")");
    block = at::zeros({r, mini_r}, options);
  } else {
    block = at::zeros({r, out_features_}, options);
    if (init_weights.is_boolean() && !init_weights.get<bool>()) {
      double bound = 1.0 / std::sqrt(static_cast<double>(out_features_));
      block.uniform_(-bound, bound);
    }
  }
  miss_block_->put_parameter(adapter, block);
  variant_ = variant;
  mini_r_[adapter] = mini_r;
  dropout_[adapter] = dropout;
}

at::Tensor MissLayer::full_block(const std::string& adapter) const {
  at::Tensor b = block(adapter);
  if (variant_ == Variant::Mini) b = b.repeat({1, out_features_ / mini_r_.at(adapter)});
  return b;
}

at::Tensor MissLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  if (variant_ == Variant::Bat) {
    // The adapted weight acts on x as a whole (bias once), as PEFT's bat forward computes it.
    at::Tensor w = weight();
    at::Tensor adapted = w + bat_transform(adapter, w, false);
    auto params = base_layer()->named_parameters(false);
    const auto* bias = params.find("bias");
    at::Tensor b = bias && bias->defined() ? bias->to(adapted.scalar_type()) : at::Tensor();
    return at::linear(x.to(adapted.scalar_type()), adapted, b).to(result.scalar_type());
  }
  at::Tensor d = full_block(adapter);
  const int64_t r = d.size(0);
  at::Tensor input = x;
  if (input.size(-1) % r != 0) input = at::constant_pad_nd(input, {0, r - input.size(-1) % r}, 0);
  input = input.to(d.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end() - 1);
  shape.push_back(input.size(-1) / r);
  shape.push_back(r);
  at::Tensor shards = input.reshape(shape).sum(-2);
  return (result + at::matmul(shards, d)).to(result.scalar_type());
}

at::Tensor MissLayer::adapted_forward(const at::Tensor& x) {
  if (variant_ != Variant::Bat) return AdapterLayer::adapted_forward(x);
  // "bat": each active adapter transforms the weight the previous ones produced.
  at::Tensor w = weight().clone();
  bool any = false;
  for (const auto& adapter : state_->active) {
    if (!has_adapter(adapter)) continue;
    w = w + bat_transform(adapter, w, false);
    any = true;
  }
  if (!any) return base_forward(x);
  auto params = base_layer()->named_parameters(false);
  const auto* bias = params.find("bias");
  at::Tensor b = bias && bias->defined() ? bias->to(w.scalar_type()) : at::Tensor();
  return at::linear(x.to(w.scalar_type()), w, b).to(x.scalar_type());
}

at::Tensor MissLayer::bat_transform(const std::string& adapter, const at::Tensor& w_in, bool reverse) const {
  at::Tensor d = block(adapter);
  const bool f32 = upcast_on_cpu(d);
  if (f32) d = d.to(at::kFloat);
  at::Tensor w = w_in.to(d.scalar_type());
  const int64_t r = d.size(-1);
  // [out/r, r, in/r, r] -> [in/r, out/r, r, r]: block (i, j) of W meets D[j].
  at::Tensor blocks = w.reshape({w.size(0) / r, r, w.size(1) / r, r}).permute({2, 0, 1, 3});
  at::Tensor out;
  if (reverse) {
    at::Tensor eye = at::eye(r, d.options().dtype(at::kFloat));
    at::Tensor inverse = at::inverse(eye + d.to(at::kFloat)).to(d.scalar_type());
    out = at::matmul(blocks - d, inverse);
  } else {
    out = at::matmul(blocks, d) + d;
  }
  out = out.permute({1, 2, 0, 3}).reshape(w.sizes());
  return f32 ? out.to(block(adapter).scalar_type()) : out;
}

void MissLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = weight();
  if (variant_ == Variant::Bat) {
    w.add_(bat_transform(adapter, w, false).to(w.scalar_type()));
    return;
  }
  // ΔW[o, i] = D[i mod r, o]: the block tiled over the input's shards (the last one cut to the remainder).
  at::Tensor d = full_block(adapter);
  if (upcast_on_cpu(d)) d = d.to(at::kFloat);
  const int64_t r = d.size(0);
  at::Tensor delta = d.t().repeat({1, (in_features_ + r - 1) / r}).slice(1, 0, in_features_);
  w.copy_((w.to(d.scalar_type()) + delta).to(w.scalar_type()));
}

void MissLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = weight();
  if (variant_ == Variant::Bat) {
    w.copy_(bat_transform(adapter, w, true).to(w.scalar_type()));
    return;
  }
  at::Tensor d = full_block(adapter);
  if (upcast_on_cpu(d)) d = d.to(at::kFloat);
  const int64_t r = d.size(0);
  at::Tensor delta = d.t().repeat({1, (in_features_ + r - 1) / r}).slice(1, 0, in_features_);
  w.copy_((w.to(d.scalar_type()) - delta).to(w.scalar_type()));
}

void MissLayer::forget_adapter(const std::string& adapter) {
  mini_r_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
