// LoKr. Random state: none derived from a seed. The initial factors are trainable parameters saved with the adapter;
// a new adapter draws them from libtorch's default generator in PEFT's order and shapes, in f32 on the CPU before
// moving them, so a given seed gives PEFT's values. rank_dropout (rescaled when rank_dropout_scale) and
// module_dropout draw from the same generator as PEFT's torch.rand does, in training only.
#include "peft4j/tuners/lokr.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's LoKrConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "LOKR"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"rank_pattern", nlohmann::json::object()},
    {"alpha_pattern", nlohmann::json::object()}, {"r", 8}, {"alpha", 8}, {"rank_dropout", 0.0},
    {"module_dropout", 0.0}, {"use_effective_conv2d", false}, {"decompose_both", false}, {"decompose_factor", -1},
    {"rank_dropout_scale", false}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"init_weights", true}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
    {"modules_to_save", nullptr}};

class LokrTuner : public lycoris::Tuner<LokrLayer> {
 public:
  LokrTuner() : lycoris::Tuner<LokrLayer>("LOKR", kDefaults) {}

 protected:
  void validate(nlohmann::json& config) const override {
    lycoris::Tuner<LokrLayer>::validate(config);
    const auto& init = config["init_weights"];
    if (!init.is_boolean() && !(init.is_string() && init.get<std::string>() == "lycoris"))
      fail(ErrorKind::InvalidArgument, "LOKR config field 'init_weights' must be true, false or \"lycoris\", got " +
                                           init.dump());
    config_bool(config, "decompose_both");
    config_bool(config, "rank_dropout_scale");
    int64_t factor = config_int(config, "decompose_factor");
    if (factor != -1 && factor <= 0)
      fail(ErrorKind::InvalidArgument, "LOKR config field 'decompose_factor' must be -1 or a positive integer, got " +
                                           config["decompose_factor"].dump());
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LokrTuner>());

}  // namespace

std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor) {
  if (factor > 0 && dimension % factor == 0) return {factor, dimension / factor};
  if (factor == -1) factor = dimension;
  int64_t m = 1, n = dimension;
  const int64_t length = m + n;
  while (m < n) {
    int64_t new_m = m + 1;
    while (dimension % new_m != 0) ++new_m;
    int64_t new_n = dimension / new_m;
    if (new_m + new_n > length || new_m > factor) break;
    m = new_m;
    n = new_n;
  }
  if (m > n) std::swap(m, n);
  return {m, n};
}

LokrLayer::LokrLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LycorisLayer(std::move(base), std::move(state), "LOKR") {}

void LokrLayer::add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config,
                    bool initialise) {
  set_hyper(adapter, r, alpha, config, config_bool(config, "rank_dropout_scale"));
  const int64_t factor = config_int(config, "decompose_factor");
  // out = a * c and in = b * d with ΔW = w1 [a, b] ⊗ w2 [c, d].
  auto [out_l, out_k] = lokr_factorization(out_features_, factor);
  auto [in_m, in_n] = lokr_factorization(in_features_, factor);
  const double rank = static_cast<double>(r);
  const bool full_w1 = !(config_bool(config, "decompose_both") && rank < std::max(out_l, in_m) / 2.0);
  const bool full_w2 = !(rank < std::max(out_k, in_n) / 2.0);

  const auto& init = config["init_weights"];
  const bool lycoris_way = init.is_string();
  const bool zero_init = lycoris_way || init.get<bool>();
  // Which factor starts at zero so that ΔW = 0: w1 (or w1_a) by default, w2 (or w2_b) the LyCORIS way.
  auto fill = [&](bool zero) {
    return [zero, initialise](at::Tensor& t) {
      if (!initialise) return;
      if (zero)
        t.zero_();
      else
        lycoris::kaiming_uniform(t);
    };
  };
  const bool zero_w1 = zero_init && !lycoris_way;
  const bool zero_w2 = lycoris_way;
  if (full_w1) {
    lokr_w1_->put_parameter(adapter, make_factor({out_l, in_m}, fill(zero_w1)));
  } else {
    lokr_w1_a_->put_parameter(adapter, make_factor({out_l, r}, fill(zero_w1)));
    lokr_w1_b_->put_parameter(adapter, make_factor({r, in_m}, fill(false)));
  }
  if (full_w2) {
    lokr_w2_->put_parameter(adapter, make_factor({out_k, in_n}, fill(zero_w2)));
  } else {
    lokr_w2_a_->put_parameter(adapter, make_factor({out_k, r}, fill(false)));
    lokr_w2_b_->put_parameter(adapter, make_factor({r, in_n}, fill(zero_w2)));
  }
}

at::Tensor LokrLayer::delta_weight(const std::string& adapter) const {
  at::Tensor w1 = lokr_w1_->contains(adapter)
                      ? lokr_w1_->parameter(adapter)
                      : at::matmul(lokr_w1_a_->parameter(adapter), lokr_w1_b_->parameter(adapter));
  at::Tensor w2 = lokr_w2_->contains(adapter)
                      ? lokr_w2_->parameter(adapter)
                      : at::matmul(lokr_w2_a_->parameter(adapter), lokr_w2_b_->parameter(adapter));
  return at::kron(w1, w2.contiguous()) * scaling(adapter);
}

}  // namespace peft4j::tuners
