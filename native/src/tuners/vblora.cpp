// VB-LoRA as PEFT 0.21 implements it (tuners/vblora). Random state: a new adapter draws its bank from
// U(-init_vector_bank_bound, init_vector_bank_bound) and its logits from N(0, init_logits_std) with our own generator
// (PEFT redraws the bank for every targeted module and keeps the last draw; the distribution is the same); the exact
// values of an adapter come from its saved file, as PEFT loads them. save_only_topk_weights writes and reads PEFT's
// compact format (top-k indices and k−1 softmax weights per sub-vector); such an adapter serves inference and merging
// only, as in PEFT.
#include "peft4j/tuners/vblora.h"

#include <limits>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"

namespace peft4j::tuners {

namespace {

const char* kBank = "vblora_vector_bank";

// Every field of PEFT 0.21's VBLoRAConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "VBLORA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 4}, {"num_vectors", 256}, {"vector_length", 256},
    {"topk", 2}, {"target_modules", nullptr}, {"exclude_modules", nullptr}, {"save_only_topk_weights", false},
    {"vblora_dropout", 0.0}, {"fan_in_fan_out", false}, {"bias", "none"}, {"modules_to_save", nullptr},
    {"init_vector_bank_bound", 0.02}, {"init_logits_std", 0.1}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// PEFT stores top-k indices in the narrowest integer type that holds num_vectors.
at::ScalarType index_type(int64_t num_vectors) {
  if (num_vectors < (int64_t(1) << 8)) return at::kByte;
  if (num_vectors < (int64_t(1) << 15)) return at::kShort;
  if (num_vectors < (int64_t(1) << 31)) return at::kInt;
  return at::kLong;
}

class VBLoraTuner : public WrappingTuner<VBLoraLayer> {
 public:
  VBLoraTuner() : WrappingTuner({"VBLORA", kDefaults, kLinear | kConv1D}) {}

  // The bank is model-level state: one per adapter on "base_model", in the dtype and on the device of the targets.
  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    auto weight = module_at(model, targets.front())->parameters(true).front();
    at::NoGradGuard no_grad;
    const double bound = config_double(ctx.config, "init_vector_bank_bound");
    at::Tensor bank = at::empty({config_int(ctx.config, "num_vectors"), config_int(ctx.config, "vector_length")},
                                weight.options().requires_grad(false))
                          .uniform_(-bound, bound);
    model_level_dict(tuner_module, kBank)->put_parameter(ctx.adapter, bank);
    ctx.shared[kBank] = bank;
  }

  // PEFT's _remove_adapter_name_from_key: "...vblora_logits_A.<adapter>_topk_indices" saves as
  // "...vblora_logits_A_topk_indices"; every other key as usual.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    auto dot = model_key.rfind('.');
    if (dot != std::string::npos && !ends_with(model_key, "." + adapter)) {
      std::string suffix = model_key.substr(dot + 1);
      if (suffix.compare(0, adapter.size() + 1, adapter + "_") == 0)
        return model_key.substr(0, dot) + "_" + suffix.substr(adapter.size() + 1);
    }
    return Tuner::checkpoint_key(model_key, adapter);
  }

  void to_checkpoint(std::map<std::string, at::Tensor>& tensors, const nlohmann::json& config) const override {
    if (!config_bool(config, "save_only_topk_weights")) return;
    const int64_t topk = config_int(config, "topk");
    const auto indices_type = index_type(config_int(config, "num_vectors"));
    std::vector<std::string> keys;
    for (const auto& [key, t] : tensors)
      if (ends_with(key, "vblora_logits_A") || ends_with(key, "vblora_logits_B")) keys.push_back(key);
    for (const auto& key : keys) {
      auto [values, indices] = at::topk(tensors.at(key), topk, -1);
      tensors[key + "_topk_indices"] = indices.to(indices_type);
      tensors[key + "_topk_weights"] = at::softmax(values, -1).slice(-1, 0, topk - 1).contiguous();
      tensors.erase(key);
    }
  }

  // Compact logits become full ones: log of the k weights at their indices, −inf elsewhere (PEFT's
  // _remap_adapter_state_dict_for_load).
  void from_checkpoint(std::map<std::string, at::Tensor>& tensors, const nlohmann::json& config) const override {
    if (!config_bool(config, "save_only_topk_weights")) return;
    const int64_t num_vectors = config_int(config, "num_vectors");
    const std::string tail = "_topk_indices";
    std::vector<std::string> keys;
    for (const auto& [key, t] : tensors)
      if (ends_with(key, tail)) keys.push_back(key);
    for (const auto& key : keys) {
      const std::string base = key.substr(0, key.size() - tail.size());
      auto weights_it = tensors.find(base + "_topk_weights");
      if (weights_it == tensors.end())
        fail(ErrorKind::Format, "VB-LoRA adapter saved with save_only_topk_weights has '" + key + "' but no '" + base +
                                    "_topk_weights'");
      at::Tensor weights = weights_it->second;
      weights = at::cat({weights, 1 - weights.sum(-1, true)}, -1);
      at::Tensor index = tensors.at(key).to(at::kLong);
      std::vector<int64_t> shape(weights.sizes().begin(), weights.sizes().end() - 1);
      shape.push_back(num_vectors);
      tensors[base] = at::full(shape, -std::numeric_limits<double>::infinity(), weights.options())
                          .scatter(-1, index, at::log(weights));
      tensors.erase(key);
      tensors.erase(base + "_topk_weights");
    }
  }
 protected:
  void validate(nlohmann::json& config) const override {
    for (const char* field : {"r", "num_vectors", "vector_length", "topk"}) config_positive_int(config, field);
    if (config_int(config, "topk") > config_int(config, "num_vectors"))
      fail(ErrorKind::InvalidArgument, "VBLORA config field 'topk' (" + config["topk"].dump() +
                                           ") must not exceed 'num_vectors' (" + config["num_vectors"].dump() + ")");
    config_probability(config, "vblora_dropout");
    config_double(config, "init_vector_bank_bound");
    if (config_double(config, "init_logits_std") < 0)
      fail(ErrorKind::InvalidArgument, "VBLORA config field 'init_logits_std' must be >= 0, got " +
                                           config["init_logits_std"].dump());
    config_bool(config, "save_only_topk_weights");
    config_bool(config, "fan_in_fan_out");
    std::string bias = config_string(config, "bias");
    if (bias != "none" && bias != "all" && !ends_with(bias, "_only"))
      fail(ErrorKind::InvalidArgument, "VBLORA config field 'bias' must be \"none\", \"all\" or \"vblora_only\", got \"" +
                                           bias + "\"");
  }

  void add(VBLoraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.shared.at(kBank), ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<VBLoraTuner>());

}  // namespace

VBLoraLayer::VBLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "VBLORA") {}

bool VBLoraLayer::has_adapter(const std::string& adapter) const { return vblora_logits_A_->contains(adapter); }

void VBLoraLayer::add(const std::string& adapter, const at::Tensor& bank, const nlohmann::json& config, bool initialise) {
  const int64_t length = config_int(config, "vector_length");
  const int64_t r = config_int(config, "r");
  const int64_t num_vectors = config_int(config, "num_vectors");
  for (const auto& [name, features] : {std::pair<const char*, int64_t>{"in_features", shape_.in_features},
                                       std::pair<const char*, int64_t>{"out_features", shape_.out_features}})
    if (features % length != 0)
      fail(ErrorKind::InvalidArgument, std::string("VBLORA config field 'vector_length' (") + std::to_string(length) +
                                           ") must divide the layer's " + name + " (" + std::to_string(features) + ")");
  at::NoGradGuard no_grad;
  auto options = base_layer()->parameters(false).front().options().requires_grad(false);
  at::Tensor a = at::zeros({r, shape_.in_features / length, num_vectors}, options);
  at::Tensor b = at::zeros({shape_.out_features / length, r, num_vectors}, options);
  if (initialise) {
    const double std = config_double(config, "init_logits_std");
    a.normal_(0.0, std);
    b.normal_(0.0, std);
  }
  vblora_logits_A_->put_parameter(adapter, a);
  vblora_logits_B_->put_parameter(adapter, b);
  vblora_vector_bank_->put_parameter(adapter, bank);
  topk_[adapter] = config_int(config, "topk");
  dropout_[adapter] = config_double(config, "vblora_dropout");
}

std::pair<at::Tensor, at::Tensor> VBLoraLayer::lora_matrices(const std::string& adapter, bool f32) const {
  at::Tensor logits_a = vblora_logits_A_->parameter(adapter);
  at::Tensor logits_b = vblora_logits_B_->parameter(adapter);
  if (is_training() && logits_a[0][0].isinf().any().item<bool>())
    fail(ErrorKind::InvalidArgument, "VB-LoRA adapter '" + adapter + "' has infinite logits: it was saved with "
                                     "save_only_topk_weights and serves inference and merging only, not training");
  at::Tensor bank = vblora_vector_bank_->parameter(adapter).to(logits_a.device());
  if (f32) {
    logits_a = logits_a.to(at::kFloat);
    logits_b = logits_b.to(at::kFloat);
    bank = bank.to(at::kFloat);
  }
  const int64_t k = topk_.at(adapter);
  // Each sub-vector: the softmax of its top-k logits weighting the bank vectors they select.
  auto mix = [&](const at::Tensor& logits) {
    auto [values, indices] = at::topk(logits, k, -1);
    at::Tensor weights = at::softmax(values, -1);
    return (weights.unsqueeze(-1) * bank.index({indices})).sum(-2);
  };
  at::Tensor a = mix(logits_a).reshape({logits_a.size(0), -1});                        // [r, in]
  at::Tensor b = mix(logits_b).transpose(1, 2).reshape({-1, logits_b.size(1)});        // [out, r]
  return {a, b};
}

at::Tensor VBLoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  auto [a, b] = lora_matrices(adapter);
  at::Tensor input = x.to(vblora_vector_bank_->parameter(adapter).scalar_type());
  const double p = dropout_.at(adapter);
  if (p > 0) input = at::dropout(input, p, is_training());
  return (result + at::linear(at::linear(input, a), b)).to(result.scalar_type());
}

at::Tensor VBLoraLayer::delta_weight(const std::string& adapter) const {
  at::Tensor logits = vblora_logits_A_->parameter(adapter);
  // Low-precision matmuls are slow on CPUs: PEFT merges in f32 there.
  bool f32 = logits.device().is_cpu() && (logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16);
  auto [a, b] = lora_matrices(adapter, f32);
  at::Tensor delta = at::matmul(b, a);
  return shape_.fan_in_fan_out ? delta.t() : delta;
}

void VBLoraLayer::forget_adapter(const std::string& adapter) {
  topk_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
