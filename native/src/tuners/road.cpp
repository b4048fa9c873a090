// RoAd as PEFT 0.21 implements it (see road.h). Random state: only the initial angles and scales of
// init_weights=false (θ ~ N(0, 0.5), α ~ N(1, 0.5), drawn from libtorch's generator, not PEFT's); nothing is
// derived from a seed.
#include "peft4j/tuners/road.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/orthogonal.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's RoadConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "ROAD"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"variant", "road_1"}, {"group_size", 64},
    {"init_weights", true}, {"target_modules", nullptr}, {"modules_to_save", nullptr}};

class RoadTuner : public WrappingTuner<RoadLayer> {
 public:
  RoadTuner() : WrappingTuner({"ROAD", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    config_choice(config, "variant", {"road_1", "road_2", "road_4"});
    const int64_t group_size = config_positive_int(config, "group_size");
    if (group_size % 2 != 0)
      fail(ErrorKind::InvalidArgument, "ROAD config field 'group_size' must be a positive even integer, got " +
                                           std::to_string(group_size));
    config_bool(config, "init_weights");
  }

  void add(RoadLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.key, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<RoadTuner>());

at::Tensor index_tensor(std::initializer_list<int64_t> values, const at::Device& device) {
  return at::tensor(std::vector<int64_t>(values), at::kLong).to(device);
}

}  // namespace

RoadLayer::RoadLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, "ROAD wraps Linear modules only, not " + base->name());
  out_features_ = linear->weight.size(0);
}

bool RoadLayer::has_adapter(const std::string& adapter) const { return variant_.count(adapter) > 0; }

void RoadLayer::add(const std::string& adapter, const nlohmann::json& config, const std::string& key, bool initialise) {
  const std::string variant = config_string(config, "variant");
  const int64_t group_size = config_int(config, "group_size");
  if (out_features_ % group_size != 0)
    fail(ErrorKind::InvalidArgument, "ROAD config field 'group_size' (" + std::to_string(group_size) +
                                         ") must divide out_features (" + std::to_string(out_features_) +
                                         ") of module '" + key + "'");
  const int64_t size = variant == "road_1" ? out_features_ / 2 : variant == "road_2" ? out_features_ : out_features_ * 2;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  auto options = at::TensorOptions().dtype(w.scalar_type()).device(w.device());
  at::Tensor theta = at::zeros({size}, options);
  at::Tensor alpha = at::ones({size}, options);
  if (initialise && !config_bool(config, "init_weights")) {
    theta.normal_(0.0, 0.5);
    alpha.normal_(1.0, 0.5);
  }
  road_theta_->put_parameter(adapter, theta);
  road_alpha_->put_parameter(adapter, alpha);
  variant_[adapter] = variant;
  group_size_[adapter] = group_size;
}

std::pair<at::Tensor, at::Tensor> RoadLayer::columns(const std::string& adapter) const {
  const std::string& variant = variant_.at(adapter);
  const int64_t group = group_size_.at(adapter);
  at::Tensor theta = road_theta_->parameter(adapter);
  at::Tensor alpha = road_alpha_->parameter(adapter);
  if (variant == "road_1") {
    // One angle and scale per pair: each half group's values serve both halves.
    theta = theta.reshape({-1, group / 2}).repeat_interleave(2, 0).flatten();
    alpha = alpha.reshape({-1, group / 2}).repeat_interleave(2, 0).flatten();
    return {alpha * theta.cos(), alpha * theta.sin()};
  }
  if (variant == "road_2") return {alpha * theta.cos(), alpha * theta.sin()};
  // road_4: per group, the first `group` values drive the diagonal, the next `group` the partner coefficients.
  theta = theta.reshape({-1, 2, group});
  alpha = alpha.reshape({-1, 2, group});
  return {alpha.select(1, 0).flatten() * theta.select(1, 0).cos().flatten(),
          alpha.select(1, 1).flatten() * theta.select(1, 1).sin().flatten()};
}

// y = h * first + rotate_half(h) * second, rotate_half pairing each group's halves as (-h1, h0) (the paper's eq. 4).
at::Tensor RoadLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  const at::ScalarType dtype = result.scalar_type();
  auto [first, second] = columns(adapter);
  at::Tensor h = result.to(first.scalar_type());
  at::Tensor grouped = h.reshape({-1, 2, group_size_.at(adapter) / 2});
  at::Tensor rotated = at::stack({-grouped.select(1, 1), grouped.select(1, 0)}, 1).reshape(h.sizes());
  return (h * first + rotated * second).to(dtype);
}

at::Tensor RoadLayer::rotation_matrix(const std::string& adapter) const {
  auto [first, second] = columns(adapter);
  const int64_t half = group_size_.at(adapter) / 2;
  const int64_t size = second.size(0);
  at::Tensor swap = index_tensor({1, 0}, first.device());
  // Row (g, 0, j) gets -second(g, 0, j) at column (g, 1, j); row (g, 1, j) gets second(g, 1, j) at column (g, 0, j).
  at::Tensor swapped = second.reshape({-1, 2, half}).index_select(1, swap).flatten();
  at::Tensor partner = at::diag(swapped).reshape({-1, 2, half, size}).index_select(1, swap);
  at::Tensor sign = at::tensor(std::vector<double>{-1.0, 1.0}, partner.options()).view({1, 2, 1, 1});
  return at::diag(first) + (partner * sign).reshape({size, size});
}

// W <- R W and b <- R b: R (W x + b) = (R W) x + R b.
void RoadLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor r = rotation_matrix(adapter).to(w.scalar_type());
  w.copy_(at::matmul(r, w));
  at::Tensor bias = orthogonal::base_bias(*base_layer());
  if (bias.defined()) bias.copy_(at::matmul(r, bias));
}

// R is a scaled rotation, not orthogonal: PEFT inverts it in float32.
void RoadLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor inverse = at::linalg_inv(rotation_matrix(adapter).to(at::kFloat)).to(w.scalar_type());
  w.copy_(at::matmul(inverse, w));
  at::Tensor bias = orthogonal::base_bias(*base_layer());
  if (bias.defined()) bias.copy_(at::matmul(inverse, bias));
}

void RoadLayer::forget_adapter(const std::string& adapter) {
  variant_.erase(adapter);
  group_size_.erase(adapter);
}

}  // namespace peft4j::tuners
