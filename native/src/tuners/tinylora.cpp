// TinyLoRA. Random state: each layer's projections P come from PEFT's own recipe, a CPU generator seeded with
// projection_seed + the layer's position among the adapter's targets (module order) drawing N(0, 1/r) — so an adapter
// saved with save_projection false regenerates them; v starts at zero (init_weights true), U(-init_v_bound,
// init_v_bound) from the global generator ("uniform"), or uninitialised memory (false), as PEFT's torch.empty. A and B
// are the base weight's SVD, computed in f32, saved with the adapter (an SVD's signs are the library's choice, so a
// loaded adapter keeps the file's).
//
// weight_tying: the n targets form max(1, round(n · (1 − weight_tying))) groups (Python's round, ties to even) of
// max(1, n / groups) consecutive targets, the last group taking the rest; a group shares one v.
#include "peft4j/tuners/tinylora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/embedding.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's TinyLoraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "TINYLORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 2}, {"u", 64}, {"weight_tying", 0.0},
    {"projection_seed", 42}, {"save_projection", true}, {"init_v_bound", 0.02}, {"target_modules", nullptr},
    {"tinylora_dropout", 0.0}, {"fan_in_fan_out", false}, {"bias", "none"}, {"modules_to_save", nullptr},
    {"init_weights", true}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}};

const char* kVectors = "tinylora_v";

std::string vector_key(int64_t group) { return std::string(kVectors) + "." + std::to_string(group); }
std::string layer_key(const std::string& key) { return "tinylora_layer/" + key; }

at::Tensor module_weight(const torch::nn::Module& module) {
  const torch::nn::Module& m =
      dynamic_cast<const AdapterLayer*>(&module) ? *dynamic_cast<const AdapterLayer&>(module).base_layer() : module;
  return m.named_parameters(false)["weight"];
}

class TinyLoraTuner : public WrappingTuner<TinyLoraLayer> {
 public:
  // init_weights true: v = 0, so R = 0 and ΔW = 0.
  TinyLoraTuner()
      : WrappingTuner({"TINYLORA", kDefaults, kLinear | kConv1D | kEmbedding, {{"init_weights", true}}}) {}

  // PEFT's _create_and_replace bookkeeping: the groups' v vectors (model-level "tinylora_v.<adapter>.<group>"), and
  // each target's position and group, handed to the layers by module path.
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    const bool save = config_bool(ctx.config, "save_projection");
    for (const auto& item : model.named_modules("", false))
      if (auto* layer = dynamic_cast<TinyLoraLayer*>(item.value().get()))
        if (auto saves = layer->saves_projection(); saves && *saves != save)
          fail(ErrorKind::InvalidArgument, "TINYLORA config field 'save_projection' must be the same for every TinyLoRA "
                                           "adapter of a model (PEFT saves the projections for all adapters or none)");
    const int64_t n = static_cast<int64_t>(targets.size());
    const double kept = static_cast<double>(n) * (1.0 - config_double(ctx.config, "weight_tying"));
    // nearbyint under the default rounding mode rounds ties to even, as Python's round
    const int64_t groups = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(kept)));
    const int64_t group_size = std::max<int64_t>(1, n / groups);
    const int64_t u = config_int(ctx.config, "u");
    const auto& init = ctx.config["init_weights"];
    auto vectors = std::make_shared<torch::nn::Module>();
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = std::min(g * group_size, n - 1);
      auto options = module_weight(*module_at(model, targets[first])).options().requires_grad(false);
      at::Tensor v = at::zeros({u}, options);
      if (ctx.initialise && init.is_string()) {
        at::NoGradGuard no_grad;
        const double bound = config_double(ctx.config, "init_v_bound");
        v.uniform_(-bound, bound);
      } else if (ctx.initialise && init == false) {
        v = at::empty({u}, options);
      }
      vectors->register_parameter(std::to_string(g), v);
      ctx.shared[vector_key(g)] = v;
    }
    model_level_dict(tuner_module, kVectors)->put_module(ctx.adapter, vectors);
    for (int64_t i = 0; i < n; ++i)
      ctx.shared[layer_key(targets[i])] = at::tensor({i, std::min(i / group_size, groups - 1)}, at::kLong);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "tinylora_dropout");
    config_positive_int(config, "r");
    config_positive_int(config, "u");
    config_probability(config, "weight_tying", /*one_allowed=*/true);
    config_int(config, "projection_seed");
    config_bool(config, "save_projection");
    config_double(config, "init_v_bound");
    config_bool(config, "fan_in_fan_out");
    const auto& init = config["init_weights"];
    if (!init.is_boolean() && init != "uniform")
      fail(ErrorKind::InvalidArgument, "TINYLORA config field 'init_weights' must be true, false or \"uniform\", got " +
                                           init.dump());
  }

  void add(TinyLoraLayer& layer, const InjectContext& ctx) const override {
    std::vector<at::Tensor> vectors;
    for (int64_t g = 0; ctx.shared.count(vector_key(g)); ++g) vectors.push_back(ctx.shared.at(vector_key(g)));
    const at::Tensor& place = ctx.shared.at(layer_key(ctx.key));
    layer.add(ctx.adapter, ctx.config, place[0].item<int64_t>(), vectors, place[1].item<int64_t>(), ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<TinyLoraTuner>());

}  // namespace

TinyLoraLayer::TinyLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  if (const auto* embedding = dynamic_cast<const torch::nn::EmbeddingImpl*>(base.get())) {
    embedding_ = true;
    shape_ = {embedding->weight.size(1), embedding->weight.size(0), false};
  } else {
    shape_ = wrapped_linear_shape(*base, "TinyLoRA");
  }
  tinylora_A_ = register_module("tinylora_A", std::make_shared<AdapterDict>());
  tinylora_B_ = register_module("tinylora_B", std::make_shared<AdapterDict>());
  tinylora_P_ = register_module("tinylora_P", std::make_shared<AdapterDict>());
  tinylora_v_ = register_module(kVectors, std::make_shared<AdapterDict>());
}

void TinyLoraLayer::add(const std::string& adapter, const nlohmann::json& config, int64_t index,
                        const std::vector<at::Tensor>& vectors, int64_t group, bool initialise) {
  at::Tensor weight = base_weight();
  const int64_t r = std::min(config_int(config, "r"), std::min(shape_.in_features, shape_.out_features));
  at::Tensor a = at::zeros({r, shape_.in_features}, weight.options());
  at::Tensor b = at::zeros({shape_.out_features, r}, weight.options());
  if (initialise) {
    at::NoGradGuard no_grad;
    at::Tensor w = (shape_.fan_in_fan_out ? weight.t() : weight).to(at::kFloat);  // [out, in]
    auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);
    at::Tensor root = s.slice(0, 0, r).to(weight.scalar_type()).sqrt();
    a = (root.unsqueeze(1) * vh.slice(0, 0, r).to(weight.scalar_type())).contiguous();
    b = (u.slice(1, 0, r).to(weight.scalar_type()) * root.unsqueeze(0)).contiguous();
  }
  auto generator = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(config_int(config, "projection_seed") + index));
  at::Tensor p = at::empty({config_int(config, "u"), r, r}, at::kFloat)
                     .normal_(0.0, 1.0 / std::sqrt(static_cast<double>(r)), generator)
                     .to(weight.device(), weight.scalar_type());
  tinylora_A_->put_buffer(adapter, a);
  tinylora_B_->put_buffer(adapter, b);
  tinylora_P_->put_buffer(adapter, p, config_bool(config, "save_projection"));
  // Every group's v, under this layer too, as PEFT's layers hold the model-level dict: parameter names are PEFT's.
  auto held = std::make_shared<torch::nn::Module>();
  for (size_t g = 0; g < vectors.size(); ++g) held->register_parameter(std::to_string(g), vectors[g], false);
  tinylora_v_->put_module(adapter, held);
  settings_[adapter] = {vectors.at(group), config_double(config, "tinylora_dropout")};
}

std::optional<bool> TinyLoraLayer::saves_projection() const {
  for (const auto& [adapter, s] : settings_) return tinylora_P_->is_persistent(adapter);
  return std::nullopt;
}

at::Tensor TinyLoraLayer::core(const std::string& adapter) const {
  const at::Tensor& v = settings_.at(adapter).v;
  return at::einsum("i,ijk->jk", {v, tinylora_P_->parameter(adapter).to(v.device(), v.scalar_type())});
}

at::Tensor TinyLoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor a = tinylora_A_->parameter(adapter);
  at::Tensor b = tinylora_B_->parameter(adapter);
  at::Tensor r = core(adapter);
  const double p = settings_.at(adapter).dropout;
  if (embedding_) {
    // Row lookup in B, then R and A: B[x] R A.
    at::Tensor rows = at::embedding(b.to(result.scalar_type()), x);
    if (p > 0) rows = at::dropout(rows, p, is_training());
    return result + at::matmul(at::matmul(rows, r.to(result.scalar_type())), a.to(result.scalar_type()));
  }
  at::Tensor input = x.to(a.scalar_type());
  if (p > 0) input = at::dropout(input, p, is_training());
  return (result + at::linear(at::linear(at::linear(input, a), r.to(a.scalar_type())), b)).to(result.scalar_type());
}

at::Tensor TinyLoraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor a = tinylora_A_->parameter(adapter);
  at::Tensor b = tinylora_B_->parameter(adapter);
  at::Tensor r = core(adapter).to(a.scalar_type());
  const auto dtype = a.scalar_type();
  if (upcast_on_cpu(a)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
    r = r.to(at::kFloat);
  }
  at::Tensor delta = at::matmul(at::matmul(b, r), a);
  return (shape_.fan_in_fan_out ? delta.t() : delta).to(dtype);
}

void TinyLoraLayer::forget_adapter(const std::string& adapter) { settings_.erase(adapter); }

}  // namespace peft4j::tuners
