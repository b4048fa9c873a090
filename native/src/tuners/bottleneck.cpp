// Bottleneck adapters and Compacter. Random state: libtorch's default generator (down/up initialisation, PHM rules
// and slow weights, AdapterDrop's per-batch draw).
#include "peft4j/tuners/bottleneck.h"

#include <torch/nn/init.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/models/bert.h"
#include "peft4j/tuners/adapter_fusion.h"
#include "peft4j/tuners/compacter.h"
#include "peft4j/tuners/composition.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

const char* kType = "BOTTLENECK";

// AdapterHub's BnConfig fields with the defaults peft4j fills: the Pfeiffer placement (FFN only, reduction 16, ReLU)
// with original_ln_before = false (it reads the sublayer output on every model) and the identity initialisation.
const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"target_modules", nullptr}, {"modules_to_save", nullptr},
    {"mh_adapter", false}, {"output_adapter", true}, {"reduction_factor", 16}, {"bottleneck_size", nullptr},
    {"non_linearity", "relu"}, {"original_ln_before", false}, {"original_ln_after", true},
    {"residual_before_ln", true}, {"adapter_residual_before_ln", false}, {"ln_before", false}, {"ln_after", false},
    {"init_weights", "mam_adapter"}, {"is_parallel", false}, {"scaling", 1.0}, {"use_gating", false},
    {"leave_out", nlohmann::json::array()}, {"dropout", 0.0}, {"adapter_drop", false}, {"phm_layer", false},
    {"phm_dim", 4}, {"factorized_phm_W", true}, {"shared_W_phm", false}, {"shared_phm_rule", true},
    {"factorized_phm_rule", false}, {"phm_c_init", "normal"}, {"phm_init_range", 0.0001}, {"learn_phm", true},
    {"hypercomplex_nonlinearity", "glorot-uniform"}, {"phm_rank", 1}, {"phm_bias", true}, {"fusion", nullptr},
    {"average", nullptr}, {"average_weights", nullptr}, {"normalize_weights", true}};

Insertion insertion_of(const nlohmann::json& config) {
  if (config_bool(config, "is_parallel")) return Insertion::Parallel;
  return config_bool(config, "original_ln_before") ? Insertion::NormInput : Insertion::Sequential;
}

std::vector<Sublayer> sublayers_of(const nlohmann::json& config) {
  std::vector<Sublayer> out;
  if (config_bool(config, "mh_adapter")) out.push_back(Sublayer::Attention);
  if (config_bool(config, "output_adapter")) out.push_back(Sublayer::FeedForward);
  return out;
}

// Truncated N(0, std) on [-2 std, 2 std] by redrawing what falls outside, as torch's trunc_normal_ samples it.
void truncated_normal(at::Tensor t, double std) {
  t.normal_(0.0, std);
  for (at::Tensor outside = t.abs().gt(2 * std); outside.any().item<bool>(); outside = t.abs().gt(2 * std))
    t.masked_scatter_(outside, at::empty_like(t).normal_(0.0, std).masked_select(outside));
}

class BottleneckTuner : public Tuner {
 public:
  std::string peft_type() const override { return kType; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    if (sublayers_of(config).empty())
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config: mh_adapter and output_adapter are both false, so no adapter is placed");
    for (const char* field : {"ln_before", "ln_after", "adapter_residual_before_ln"})
      if (config_bool(config, field))
        fail(ErrorKind::Unsupported, std::string("BOTTLENECK config field '") + field + "' = true is not supported");
    if (!config_bool(config, "original_ln_after"))
      fail(ErrorKind::Unsupported, "BOTTLENECK config field 'original_ln_after' = false is not supported: peft4j's "
                                   "blocks always apply their residual (and post-LN norm) after the adapter");
    const auto& residual = config["residual_before_ln"];
    if (config_bool(config, "original_ln_before") && !config_bool(config, "is_parallel") &&
        !(residual.is_boolean() && residual.get<bool>()))
      fail(ErrorKind::Unsupported, "BOTTLENECK config field 'residual_before_ln' must be true with original_ln_before "
                                   "(BERT's LayerNorm wrapper sees only the summed residual), got " + residual.dump());
    if (!residual.is_boolean() && residual != "post_add")
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'residual_before_ln' is " + residual.dump());
    const auto& factor = config["reduction_factor"];
    if (!factor.is_number() || factor.get<double>() <= 0)
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'reduction_factor' must be a positive number, got " +
                                           factor.dump());
    if (!config["bottleneck_size"].is_null() && config_int(config, "bottleneck_size") < 1)
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'bottleneck_size' must be positive");
    const auto& scaling = config["scaling"];
    if (!scaling.is_number() && scaling != "learned" && scaling != "channel")
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'scaling' must be a number, \"learned\" or \"channel\", got " +
                                           scaling.dump());
    std::string init = config_string(config, "init_weights");
    if (init != "mam_adapter" && init != "bert" && init != "houlsby")
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'init_weights' is '" + init + "' (mam_adapter, bert, houlsby)");
    bottleneck_activation(config_string(config, "non_linearity"), "BOTTLENECK config field 'non_linearity'");
    double dropout = config_double(config, "dropout");
    if (dropout < 0 || dropout >= 1) fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'dropout' must be in [0, 1)");
    config_bool(config, "adapter_drop");
    if (config_bool(config, "phm_layer")) check_phm_config(config);
    if (!fused_adapters(config).empty() && insertion_of(config) != Insertion::Sequential)
      fail(ErrorKind::Unsupported, "BOTTLENECK config field 'fusion': AdapterFusion runs over sequential adapters "
                                   "(is_parallel and original_ln_before false)");
    if (config_bool(config, "use_gating") && (!fused_adapters(config).empty() || !averaged_adapters(config).empty()))
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'use_gating' gates a new bottleneck; 'fusion' and "
                                       "'average' compose existing adapters instead");
    if (!averaged_adapters(config).empty()) {
      if (!fused_adapters(config).empty())
        fail(ErrorKind::InvalidArgument, "BOTTLENECK config: 'fusion' and 'average' are two compositions; set one");
      average_weights(config);
    }
    return config;
  }

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    config["target_modules"] =
        delta_targets(model, sublayers_of(config), insertion_of(config), leave_out_layers(config, model, kType), kType);
    return config;
  }

  bool can_wrap(const torch::nn::Module& m) const override { return delta_can_wrap(m); }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    if (!config_bool(config, "phm_layer")) return;
    int64_t width = model.hidden_size();
    check_phm_widths(config, width, bottleneck_width(config, width));
  }

  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>&,
               InjectContext& ctx) const override {
    prepare_adapter_drop(model, ctx);
    if (!config_bool(ctx.config, "phm_layer") || !config_bool(ctx.config, "shared_phm_rule")) return;
    auto rules = model_level_dict(tuner_module, "phm_rule");
    at::Tensor rule = new_phm_rule(ctx.config, module_options(model));
    if (config_bool(ctx.config, "learn_phm"))
      rules->put_parameter(ctx.adapter, rule);
    else
      rules->put_buffer(ctx.adapter, rule);
    ctx.shared["phm_rule"] = rules->parameter(ctx.adapter);
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    const auto& config = ctx.config;
    if (!fused_adapters(config).empty()) return inject_fusion(target, ctx);
    if (!averaged_adapters(config).empty()) return inject_average(target, ctx);
    int64_t width = delta_width(*target);
    int64_t inner = bottleneck_width(config, width);
    std::string init = config_string(config, "init_weights");
    std::shared_ptr<torch::nn::Module> down, up;
    if (config_bool(config, "phm_layer")) {
      check_phm_widths(config, width, inner);
      auto rule = ctx.shared.count("phm_rule") ? ctx.shared.at("phm_rule") : at::Tensor();
      auto phm_down = std::make_shared<PhmLinear>(width, inner, config, rule);
      auto phm_up = std::make_shared<PhmLinear>(inner, width, config, rule);
      if (init == "mam_adapter") phm_up->zero_output();
      down = phm_down;
      up = phm_up;
    } else {
      auto linear_down = torch::nn::Linear(width, inner), linear_up = torch::nn::Linear(inner, width);
      init_bottleneck_projection(linear_down->weight, linear_down->bias, init, false);
      init_bottleneck_projection(linear_up->weight, linear_up->bias, init, true);
      down = linear_down.ptr();
      up = linear_up.ptr();
    }
    auto module = std::make_shared<BottleneckModule>(down, up, config_string(config, "non_linearity"),
                                                     config["scaling"], width);
    module->set_dropout(config_double(config, "dropout"));
    if (config_bool(config, "use_gating")) {
      // AdapterHub draws the gate's weight from N(0, 0.02) and zeroes its bias, except with the houlsby init, which
      // keeps nn.Linear's own initialisation.
      auto gate = torch::nn::Linear(width, 1);
      if (init != "houlsby") init_bottleneck_projection(gate->weight, gate->bias, "bert", false);
      module->set_gate(gate.ptr());
    }
    return inject_delta(target, ctx, kType, module, insertion_of(config));
  }

  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    return delta_checkpoint_key(model_key, adapter);
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_weights"] = "mam_adapter";
    return identity;
  }

  bool supports_kv_cache(const nlohmann::json& config) const override {
    return !config_bool(config, "use_gating");
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<BottleneckTuner>());

}  // namespace

int64_t bottleneck_width(const nlohmann::json& config, int64_t width) {
  if (!config["bottleneck_size"].is_null()) return config_int(config, "bottleneck_size");
  return std::max<int64_t>(1, static_cast<int64_t>(width / config["reduction_factor"].get<double>()));
}

BottleneckModule::BottleneckModule(std::shared_ptr<torch::nn::Module> down, std::shared_ptr<torch::nn::Module> up,
                                   const std::string& non_linearity, const nlohmann::json& scaling, int64_t width)
    : activation_(bottleneck_activation(non_linearity, "BOTTLENECK non_linearity")) {
  register_module("adapter_down", std::move(down));
  register_module("adapter_up", std::move(up));
  if (scaling.is_number())
    scaling_ = scaling.get<double>();
  else
    learned_scaling_ = register_parameter("adapter_scaling", at::ones({scaling == "learned" ? 1 : width}));
}

void BottleneckModule::set_gate(std::shared_ptr<torch::nn::Module> gate) { gate_ = register_module("gate", std::move(gate)); }

at::Tensor BottleneckModule::delta(const at::Tensor& z) {
  at::Tensor h = activation_(models::forward_child(*this, "adapter_down", z));
  at::Tensor out = models::forward_child(*this, "adapter_up", h);
  out = learned_scaling_.defined() ? out * learned_scaling_ : out * scaling_;
  if (dropout_ > 0) out = at::dropout(out, dropout_, is_training());
  return gate_ ? out * sequence_gate(z, *gate_).unsqueeze(1) : out;
}

models::Activation bottleneck_activation(const std::string& non_linearity, const std::string& field) {
  return models::activation_by_name(non_linearity == "leakyrelu" ? "leaky_relu" : non_linearity, field);
}

void init_bottleneck_projection(const at::Tensor& weight, const at::Tensor& bias, const std::string& how, bool up) {
  at::NoGradGuard no_grad;
  at::Tensor w = weight, b = bias;
  b.zero_();
  if (how == "bert") {
    w.normal_(0.0, 0.02);
  } else if (how == "houlsby") {
    truncated_normal(w, 1e-2);
  } else if (up) {
    w.zero_();
  } else {
    torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
  }
}

at::Tensor sequence_gate(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return at::sigmoid(at::linear(x, weight.to(x.scalar_type()), bias.to(x.scalar_type()))).mean(1);
}

at::Tensor sequence_gate(const at::Tensor& x, torch::nn::Module& gate) {
  auto params = gate.named_parameters(false);
  return sequence_gate(x, params["weight"], params["bias"]);
}

}  // namespace peft4j::tuners
