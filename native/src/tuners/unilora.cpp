// Uni-LoRA. Random state: θ_d starts U(-init_theta_d_bound, init_theta_d_bound) (init_weights true) or N(0, 1) (false)
// from the global generator. The indices are PEFT's generate_index, reproduced exactly (numpy_random.h): over all the
// adapter's layers in module order, A's entries then B's, each θ_d entry is used ⌊D/d⌋ times plus once more for
// D mod d entries NumPy's default_rng(proj_seed) chooses, and the whole assignment is shuffled by the same generator.
// (PEFT first fills the index buffers with torch.randint draws that it then overwrites; peft4j makes the same draws.)
// save_indices is PEFT's per-layer buffer persistence: the latest adapter's value holds for every adapter of a layer.
#include "peft4j/tuners/unilora.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/numpy_random.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's UniLoraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "UNILORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 4}, {"proj_seed", 42}, {"theta_d_length", 256},
    {"target_modules", nullptr}, {"unilora_dropout", 0.0}, {"fan_in_fan_out", false}, {"bias", "none"},
    {"modules_to_save", nullptr}, {"init_theta_d_bound", 0.02}, {"init_weights", true}, {"save_indices", false},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}};

const char* kTheta = "unilora_theta_d";
const char* kInverseSqrtCounts = "unilora_inverse_sqrt_counts";

std::string indices_key(const char* which, const std::string& key) { return std::string("unilora_indices_") + which + "/" + key; }

// PEFT's UniLoraModel.generate_index.
at::Tensor generate_index(int64_t count, int64_t length, uint64_t seed) {
  NumpyGenerator generator(seed);
  std::vector<int64_t> data;
  data.reserve(count);
  for (int64_t i = 0; i < length; ++i) data.insert(data.end(), count / length, i);
  for (int64_t extra : generator.choice_without_replacement(length, count % length)) data.push_back(extra);
  generator.shuffle(data);
  return at::tensor(data, at::kLong);
}

class UniLoraTuner : public WrappingTuner<UniLoraLayer> {
 public:
  UniLoraTuner() : WrappingTuner({"UNILORA", kDefaults, kLinear | kConv1D}) {}

  // θ_d (model-level "unilora_theta_d.<adapter>") and the index assignment of every target, handed to the layers.
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    const int64_t length = config_int(ctx.config, "theta_d_length");
    const int64_t r = config_int(ctx.config, "r");
    at::Tensor theta;
    {
      at::NoGradGuard no_grad;
      theta = at::empty({length}, at::kFloat);
      if (config_bool(ctx.config, "init_weights")) {
        const double bound = config_double(ctx.config, "init_theta_d_bound");
        theta.uniform_(-bound, bound);
      } else {
        theta.normal_();
      }
    }
    theta = theta.to(target_options(model, targets).requires_grad(false));
    model_level_dict(tuner_module, kTheta)->put_parameter(ctx.adapter, theta);
    ctx.shared[kTheta] = theta;
    int64_t count = 0;
    for (const auto& key : targets) {
      auto shape = wrapped_linear_shape(*module_at(model, key), "Uni-LoRA");
      count += r * shape.in_features + shape.out_features * r;
      // PEFT's layers first fill their index buffers from the global generator (overwritten below): the same draws
      // keep the generator's state, and so a later adapter's θ_d, equal to PEFT's.
      if (ctx.initialise) {
        at::randint(length, {r, shape.in_features}, at::kLong);
        at::randint(length, {shape.out_features, r}, at::kLong);
      }
    }
    at::Tensor indices = generate_index(count, length, static_cast<uint64_t>(config_int(ctx.config, "proj_seed")));
    int64_t offset = 0;
    for (const auto& key : targets) {
      auto shape = wrapped_linear_shape(*module_at(model, key), "Uni-LoRA");
      ctx.shared[indices_key("A", key)] = indices.slice(0, offset, offset + r * shape.in_features).view({r, shape.in_features});
      offset += r * shape.in_features;
      ctx.shared[indices_key("B", key)] = indices.slice(0, offset, offset + shape.out_features * r).view({shape.out_features, r});
      offset += shape.out_features * r;
    }
    at::Tensor counts = at::bincount(indices, {}, length);
    ctx.shared[kInverseSqrtCounts] = at::where(counts > 0, counts.to(at::kFloat).rsqrt(), at::zeros({length}, at::kFloat));
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "unilora_dropout");
    config_positive_int(config, "r");
    config_positive_int(config, "theta_d_length");
    if (config_int(config, "proj_seed") < 0)
      fail(ErrorKind::InvalidArgument, "UNILORA config field 'proj_seed' must be >= 0 (NumPy's default_rng takes no "
                                       "negative seed), got " + config["proj_seed"].dump());
    if (config_double(config, "init_theta_d_bound") <= 0)
      fail(ErrorKind::InvalidArgument, "UNILORA config field 'init_theta_d_bound' must be positive, got " +
                                           config["init_theta_d_bound"].dump());
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
    config_bool(config, "save_indices");
  }

  void add(UniLoraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.shared.at(kTheta), ctx.shared.at(indices_key("A", ctx.key)),
              ctx.shared.at(indices_key("B", ctx.key)), ctx.shared.at(kInverseSqrtCounts));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<UniLoraTuner>());

}  // namespace

UniLoraLayer::UniLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "Uni-LoRA");
  unilora_indices_A_ = register_module("unilora_indices_A", std::make_shared<AdapterDict>());
  unilora_indices_B_ = register_module("unilora_indices_B", std::make_shared<AdapterDict>());
  unilora_scales_A_ = register_module("unilora_scales_A", std::make_shared<AdapterDict>());
  unilora_scales_B_ = register_module("unilora_scales_B", std::make_shared<AdapterDict>());
  unilora_theta_d_ = register_module(kTheta, std::make_shared<AdapterDict>());
}

void UniLoraLayer::add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& theta_d,
                       const at::Tensor& indices_a, const at::Tensor& indices_b, const at::Tensor& inverse_sqrt_counts) {
  auto options = base_weight().options().requires_grad(false);
  const bool persistent = config_bool(config, "save_indices");
  unilora_indices_A_->put_buffer(adapter, indices_a.clone().to(options.device()), persistent);
  unilora_indices_B_->put_buffer(adapter, indices_b.clone().to(options.device()), persistent);
  unilora_scales_A_->put_buffer(adapter, inverse_sqrt_counts.index({indices_a}).to(options), persistent);
  unilora_scales_B_->put_buffer(adapter, inverse_sqrt_counts.index({indices_b}).to(options), persistent);
  // The θ_d of this layer's adapters, held here too (PEFT's layers hold the model-level dict: parameter names are
  // PEFT's), saved once at model level.
  unilora_theta_d_->put_parameter(adapter, theta_d);
  for (auto* dict : {unilora_indices_A_.get(), unilora_indices_B_.get(), unilora_scales_A_.get(), unilora_scales_B_.get()})
    for (const auto& [other, rate] : dropout_) dict->put_buffer(other, dict->parameter(other), persistent);
  dropout_[adapter] = config_double(config, "unilora_dropout");
}

std::pair<at::Tensor, at::Tensor> UniLoraLayer::lora_matrices(const std::string& adapter, bool f32) const {
  at::Tensor theta = unilora_theta_d_->parameter(adapter);
  at::Tensor scales_a = unilora_scales_A_->parameter(adapter);
  at::Tensor scales_b = unilora_scales_B_->parameter(adapter);
  if (f32) {
    theta = theta.to(at::kFloat);
    scales_a = scales_a.to(at::kFloat);
    scales_b = scales_b.to(at::kFloat);
  }
  at::Tensor a = theta.index({unilora_indices_A_->parameter(adapter).to(at::kLong)}) * scales_a;  // [r, in]
  at::Tensor b = theta.index({unilora_indices_B_->parameter(adapter).to(at::kLong)}) * scales_b;  // [out, r]
  return {a, b};
}

at::Tensor UniLoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  auto [a, b] = lora_matrices(adapter, false);
  at::Tensor input = x.to(a.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  return (result + at::linear(at::linear(input, a), b)).to(result.scalar_type());
}

at::Tensor UniLoraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor theta = unilora_theta_d_->parameter(adapter);
  auto [a, b] = lora_matrices(adapter, upcast_on_cpu(theta));
  at::Tensor delta = at::matmul(b, a);
  return (shape_.fan_in_fan_out ? delta.t() : delta).to(theta.scalar_type());
}

void UniLoraLayer::forget_adapter(const std::string& adapter) { dropout_.erase(adapter); }

}  // namespace peft4j::tuners
