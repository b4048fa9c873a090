// MAM adapter: one ModelLevelTuner that delegates each part to the registered PREFIX_TUNING and BOTTLENECK tuners.
// Random state: theirs (torch's default generator).
#include "peft4j/tuners/mam.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/config_parts.h"
#include "peft4j/tuners/delta_adapter.h"
#include "peft4j/tuners/model_level.h"

namespace peft4j::tuners {

namespace {

const char* kType = "MAM";
const char* kPrefix = "prefix_tuning";
const char* kFfn = "ffn_adapter";

const nlohmann::json kDefaults = {{"peft_type", kType},      {"task_type", nullptr},
                                  {"base_model_name_or_path", nullptr}, {"revision", nullptr},
                                  {"inference_mode", false}, {"modules_to_save", nullptr},
                                  {kPrefix, nlohmann::json::object()}, {kFfn, nlohmann::json::object()}};
const nlohmann::json kPrefixDefaults = {{"num_virtual_tokens", 30}, {"prefix_projection", true}};
const int64_t kProjectionWidth = 800;
const nlohmann::json kFfnDefaults = {{"reduction_factor", 2}, {"non_linearity", "relu"}, {"scaling", 4.0}};
// The parallel FFN placement that makes the second part He et al.'s scaled parallel adapter.
const nlohmann::json kFfnFixed = {{"is_parallel", true}, {"mh_adapter", false}, {"output_adapter", true},
                                  {"original_ln_before", false}, {"phm_layer", false}, {"fusion", nullptr}};

const ModelLevelTuner& prefix_tuner() { return *as_model_level(tuner_for("PREFIX_TUNING")); }
const Tuner& ffn_tuner() { return tuner_for("BOTTLENECK"); }

template <typename F>
auto in_part(const char* name, F&& f) -> decltype(f()) {
  return in_config_part(kType, name, std::forward<F>(f));
}

class MamTuner : public ModelLevelTuner {
 public:
  std::string peft_type() const override { return kType; }
  bool base_at_root() const override { return true; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    for (const char* name : {kPrefix, kFfn})
      if (!config[name].is_object())
        fail(ErrorKind::InvalidArgument, std::string("MAM config field '") + name + "' must be an object, got " +
                                             config[name].dump());
    nlohmann::json ffn = fill_absent(config[kFfn], kFfnDefaults);
    for (const auto& [field, value] : kFfnFixed.items()) {
      if (ffn.contains(field) && ffn[field] != value)
        fail(ErrorKind::InvalidArgument, std::string("MAM config field '") + kFfn + "." + field + "' must be " +
                                             value.dump() + " (the FFN part is a parallel adapter), got " +
                                             ffn[field].dump());
      ffn[field] = value;
    }
    ffn["peft_type"] = "BOTTLENECK";
    nlohmann::json prefix = fill_absent(config[kPrefix], kPrefixDefaults);
    if (prefix["prefix_projection"] == true && !prefix.contains("encoder_hidden_size"))
      prefix["encoder_hidden_size"] = kProjectionWidth;
    prefix["peft_type"] = "PREFIX_TUNING";
    config[kPrefix] = stored_part(in_part(kPrefix, [&] { return prefix_tuner().normalize_config(prefix); }));
    config[kFfn] = stored_part(in_part(kFfn, [&] { return ffn_tuner().normalize_config(ffn); }));
    return config;
  }

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    config[kPrefix] = stored_part(in_part(kPrefix, [&] {
      return prefix_tuner().resolve_for_model(config_part(input, kPrefix, "PREFIX_TUNING"), model);
    }));
    config[kFfn] = stored_part(in_part(kFfn, [&] {
      return ffn_tuner().resolve_for_model(config_part(input, kFfn, "BOTTLENECK"), model);
    }));
    return config;
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    in_part(kPrefix, [&] { prefix_tuner().check_model(mam_prefix_config(config), model); });
    in_part(kFfn, [&] { ffn_tuner().check_model(mam_ffn_adapter_config(config), model); });
  }

  // The prefix encoder as prefix tuning builds it, and a parallel bottleneck adapter on every FFN the resolved
  // ffn_adapter.target_modules lists.
  std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                            const nlohmann::json& config, const std::shared_ptr<AdapterState>& state,
                                            bool initialise) const override {
    auto encoder = prefix_tuner().attach(model, adapter, mam_prefix_config(config), state, initialise);
    InjectContext ctx{adapter, mam_ffn_adapter_config(config), "", state, initialise, {}};
    prepare_adapter_drop(model, ctx);
    inject_part(model, ffn_tuner(), config_strings(ctx.config, "target_modules").value_or(std::vector<std::string>{}),
                ctx);
    return encoder;
  }

  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    return ffn_tuner().checkpoint_key(model_key, adapter);
  }

  std::vector<std::pair<std::string, at::Tensor>> encoder_checkpoint(torch::nn::Module& encoder,
                                                                     const nlohmann::json& config) const override {
    return prefix_tuner().encoder_checkpoint(encoder, mam_prefix_config(config));
  }

  std::vector<std::pair<std::string, std::string>> encoder_checkpoint_targets(
      const nlohmann::json& config) const override {
    return prefix_tuner().encoder_checkpoint_targets(mam_prefix_config(config));
  }

  nlohmann::json config_for_load(const nlohmann::json& saved) const override {
    nlohmann::json config = saved;
    if (saved.contains(kPrefix) && saved[kPrefix].is_object())
      config[kPrefix] = stored_part(prefix_tuner().config_for_load(config_part(saved, kPrefix, "PREFIX_TUNING")));
    return config;
  }

  models::ModelInputs adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config, models::Model& model,
                                   const models::ModelInputs& inputs) const override {
    return prefix_tuner().adapt_inputs(encoder, mam_prefix_config(config), model, inputs);
  }

  bool supports_kv_cache(const nlohmann::json& config) const override {
    return ffn_tuner().supports_kv_cache(mam_ffn_adapter_config(config));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<MamTuner>());

}  // namespace

nlohmann::json mam_prefix_config(const nlohmann::json& config) { return config_part(config, kPrefix, "PREFIX_TUNING"); }

nlohmann::json mam_ffn_adapter_config(const nlohmann::json& config) { return config_part(config, kFfn, "BOTTLENECK"); }

}  // namespace peft4j::tuners
