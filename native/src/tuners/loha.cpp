// LoHa. Random state: none derived from a seed. The initial factors are trainable parameters saved with the adapter;
// a new adapter draws them from libtorch's default generator in PEFT's order (w1_a, w1_b, w2_a[, w2_b]) and shapes,
// in f32 on the CPU before moving them, so a given seed gives PEFT's values. rank_dropout and module_dropout draw
// from the same generator as PEFT's torch.rand does, in training only.
#include "peft4j/tuners/loha.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's LoHaConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "LOHA"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"rank_pattern", nlohmann::json::object()},
    {"alpha_pattern", nlohmann::json::object()}, {"r", 8}, {"alpha", 8}, {"rank_dropout", 0.0},
    {"module_dropout", 0.0}, {"use_effective_conv2d", false}, {"target_modules", nullptr},
    {"exclude_modules", nullptr}, {"init_weights", true}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}, {"modules_to_save", nullptr}};

class LohaTuner : public lycoris::Tuner<LohaLayer> {
 public:
  LohaTuner() : lycoris::Tuner<LohaLayer>("LOHA", kDefaults) {}

 protected:
  void validate(nlohmann::json& config) const override {
    lycoris::Tuner<LohaLayer>::validate(config);
    config_bool(config, "init_weights");
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LohaTuner>());

}  // namespace

LohaLayer::LohaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LycorisLayer(std::move(base), std::move(state), "LOHA") {}

void LohaLayer::add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                    bool initialise) {
  set_hyper(adapter, r, alpha, config, /*rank_dropout_scale=*/true);
  // init_weights true (FedPara's He init with one factor zero, so ΔW = 0) or false (every factor random).
  const bool zero_w2_b = config_bool(config, "init_weights");
  auto random = [&](at::Tensor& t) {
    if (initialise) lycoris::kaiming_uniform(t);
  };
  auto last = [&](at::Tensor& t) {
    if (!initialise) return;
    if (zero_w2_b)
      t.zero_();
    else
      lycoris::kaiming_uniform(t);
  };
  hada_w1_a_->put_parameter(adapter, make_factor({out_features_, r}, random));
  hada_w1_b_->put_parameter(adapter, make_factor({r, in_features_}, random));
  hada_w2_a_->put_parameter(adapter, make_factor({out_features_, r}, random));
  hada_w2_b_->put_parameter(adapter, make_factor({r, in_features_}, last));
}

at::Tensor LohaLayer::delta_weight(const std::string& adapter) const {
  at::Tensor w1 = at::matmul(hada_w1_a_->parameter(adapter), hada_w1_b_->parameter(adapter));
  at::Tensor w2 = at::matmul(hada_w2_a_->parameter(adapter), hada_w2_b_->parameter(adapter));
  return (w1 * w2) * scaling(adapter);
}

}  // namespace peft4j::tuners
