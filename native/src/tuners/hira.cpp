// HiRA. Random state: as PEFT, A and B start from torch.randn on the global generator, then init_weights true gives A
// kaiming-uniform (a = √5) and B = 0, "gaussian" A ~ N(0, 1/r) and B = 0, false (or null) keeps them random. On an
// embedding every value but false gives A = 0 and B ~ N(0, 1), as PEFT's Embedding does.
#include "peft4j/tuners/hira.h"

#include <torch/nn/init.h>
#include <torch/nn/modules/embedding.h>

#include <algorithm>
#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's HiraConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "HIRA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 32}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"hira_dropout", 0.0}, {"fan_in_fan_out", false}, {"modules_to_save", nullptr},
    {"init_weights", true}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
    {"rank_pattern", nlohmann::json::object()}};

bool is_gaussian(const nlohmann::json& init) {
  if (!init.is_string()) return false;
  std::string lower = init.get<std::string>();
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  return lower == "gaussian";
}

class HiraTuner : public WrappingTuner<HiraLayer> {
 public:
  // init_weights true: B = 0 (an embedding's A = 0), so the update is zero.
  HiraTuner() : WrappingTuner({"HIRA", kDefaults, kLinear | kConv1D | kEmbedding, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/false, "hira_dropout");
    config_positive_int(config, "r");
    config_bool(config, "fan_in_fan_out");
    check_pattern(config, "rank_pattern", /*positive_ints=*/true);
    const auto& init = config["init_weights"];
    if (!init.is_boolean() && !init.is_null() && !is_gaussian(init))
      fail(ErrorKind::InvalidArgument, "HIRA config field 'init_weights' must be true, false or \"gaussian\", got " +
                                           init.dump());
  }

  // PEFT 0.21 reads rank_pattern only when it adds the adapter to a module that already is a HiRA layer; a module's
  // first HiRA adapter takes r (its dispatch ignores the pattern's rank). peft4j does the same, so files match.
  void add(HiraLayer& layer, const InjectContext& ctx) const override {
    const int64_t r = layer.empty() ? config_int(ctx.config, "r") : pattern_int(ctx.config, "rank_pattern", ctx.key, "r");
    layer.add(ctx.adapter, r, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<HiraTuner>());

}  // namespace

HiraLayer::HiraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  if (const auto* embedding = dynamic_cast<const torch::nn::EmbeddingImpl*>(base.get())) {
    embedding_ = true;
    shape_ = {embedding->weight.size(0), embedding->weight.size(1), false};
  } else {
    shape_ = wrapped_linear_shape(*base, "HiRA");
  }
  hira_A_ = register_module("hira_A", std::make_shared<AdapterDict>());
  hira_B_ = register_module("hira_B", std::make_shared<AdapterDict>());
  hira_embedding_A_ = register_module("hira_embedding_A", std::make_shared<AdapterDict>());
  hira_embedding_B_ = register_module("hira_embedding_B", std::make_shared<AdapterDict>());
}

at::Tensor HiraLayer::base_weight() const { return base_layer()->named_parameters(false)["weight"]; }

void HiraLayer::add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise) {
  const auto& init = config["init_weights"];
  at::Tensor a = at::randn({r, shape_.in_features}, at::kFloat);
  at::Tensor b = at::randn({shape_.out_features, r}, at::kFloat);
  if (initialise) {
    at::NoGradGuard no_grad;
    const bool is_false = init.is_boolean() && !init.get<bool>();
    if (embedding_ && !is_false) {
      a.zero_();
      b.normal_();
    } else if (!embedding_ && init.is_boolean() && init.get<bool>()) {
      torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
      b.zero_();
    } else if (!embedding_ && is_gaussian(init)) {
      a.normal_(0.0, 1.0 / static_cast<double>(r));
      b.zero_();
    }
  }
  auto options = base_weight().options().requires_grad(false);
  (embedding_ ? hira_embedding_A_ : hira_A_)->put_parameter(adapter, a.to(options));
  (embedding_ ? hira_embedding_B_ : hira_B_)->put_parameter(adapter, b.to(options));
  dropout_[adapter] = config_double(config, "hira_dropout");
}

at::Tensor HiraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor w = base_weight();
  if (embedding_) {
    at::Tensor product = at::mm(hira_embedding_B_->parameter(adapter), hira_embedding_A_->parameter(adapter));
    // PEFT looks up without the base embedding's padding_idx: the padding row's update trains too.
    return (result + at::embedding(w * product.t(), x)).to(result.scalar_type());
  }
  at::Tensor a = hira_A_->parameter(adapter);
  at::Tensor input = x.to(a.scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  at::Tensor product = at::mm(hira_B_->parameter(adapter), a);  // [out, in]
  return (result + at::linear(input, (shape_.fan_in_fan_out ? w.t() : w) * product)).to(result.scalar_type());
}

at::Tensor HiraLayer::modulation(const std::string& adapter) const {
  at::Tensor a = (embedding_ ? hira_embedding_A_ : hira_A_)->parameter(adapter);
  at::Tensor b = (embedding_ ? hira_embedding_B_ : hira_B_)->parameter(adapter);
  const auto dtype = b.scalar_type();
  if (upcast_on_cpu(b)) {
    a = a.to(at::kFloat);
    b = b.to(at::kFloat);
  }
  at::Tensor product = at::matmul(b, a);
  return ((embedding_ || shape_.fan_in_fan_out) ? product.t() : product).to(dtype);
}

void HiraLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  if (merged_.empty()) weight_before_merge_ = w.detach().clone();
  w.add_(weight_before_merge_ * modulation(adapter).to(w.scalar_type()));
}

void HiraLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  if (merged_.size() > 1) {
    w.sub_(weight_before_merge_ * modulation(adapter).to(w.scalar_type()));
    return;
  }
  // The last one: PEFT puts the weight from before the first merge back.
  w.copy_(weight_before_merge_);
  weight_before_merge_ = at::Tensor();
}

void HiraLayer::forget_adapter(const std::string& adapter) { dropout_.erase(adapter); }

}  // namespace peft4j::tuners
