// UniPELT: one ModelLevelTuner that delegates each part to the registered PREFIX_TUNING, BOTTLENECK and LORA tuners
// and adds the gates. Random state: theirs, then the prefix gates (torch's default generator).
#include "peft4j/tuners/unipelt.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "peft4j/error.h"
#include "peft4j/tuners/bottleneck.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/config_parts.h"
#include "peft4j/tuners/delta_adapter.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/prompt_learning.h"

namespace peft4j::tuners {

namespace {

const char* kType = "UNIPELT";
const char* kPrefix = "prefix_tuning";
const char* kAdapter = "adapter";
const char* kLora = "lora";

const nlohmann::json kDefaults = {{"peft_type", kType},      {"task_type", nullptr},
                                  {"base_model_name_or_path", nullptr}, {"revision", nullptr},
                                  {"inference_mode", false}, {"modules_to_save", nullptr},
                                  {kPrefix, nlohmann::json::object()}, {kAdapter, nlohmann::json::object()},
                                  {kLora, nlohmann::json::object()}};
// AdapterHub's UniPELTConfig parts: PrefixTuningConfig(prefix_length=10) (bottleneck 512, one shared gate),
// SeqBnConfig(reduction_factor=16), LoRAConfig(r=8) on the query and value projections.
const nlohmann::json kPrefixDefaults = {{"num_virtual_tokens", 10}, {"prefix_projection", true}, {"shared_gating", true}};
const int64_t kProjectionWidth = 512;
const nlohmann::json kAdapterDefaults = {{"reduction_factor", 16}, {"non_linearity", "relu"}};
const nlohmann::json kAdapterFixed = {{"use_gating", true}, {"fusion", nullptr}, {"average", nullptr}};
const nlohmann::json kLoraDefaults = {{"r", 8}};
// LoRA fields whose only effect is the scaling α/r, which the gate replaces.
const char* kLoraScalingFields[] = {"lora_alpha", "use_rslora", "alpha_pattern"};

const std::map<std::string, std::vector<std::string>> kQueryValueProjections = {
    {"llama", {"q_proj", "v_proj"}}, {"qwen2", {"q_proj", "v_proj"}}, {"mistral", {"q_proj", "v_proj"}},
    {"gpt2", {"c_attn"}},            {"bert", {"query", "value"}}};

const ModelLevelTuner& prefix_tuner() { return *as_model_level(tuner_for("PREFIX_TUNING")); }
const Tuner& adapter_tuner() { return tuner_for("BOTTLENECK"); }
const Tuner& lora_tuner() { return tuner_for("LORA"); }

template <typename F>
auto in_part(const char* name, F&& f) -> decltype(f()) {
  return in_config_part(kType, name, std::forward<F>(f));
}

// The prefix part as stored: PREFIX_TUNING's config of `part`, with UniPELT's own shared_gating (from `original`, the
// part before PREFIX_TUNING saw it) beside its fields.
void store_prefix_part(nlohmann::json& config, const nlohmann::json& part, const nlohmann::json& original) {
  config[kPrefix] = stored_part(part);
  if (original.contains("shared_gating")) config[kPrefix]["shared_gating"] = original["shared_gating"];
}

[[noreturn]] void bad_part_field(const char* part, const std::string& field, const std::string& why) {
  fail(ErrorKind::InvalidArgument, std::string(kType) + " config field '" + part + "." + field + "' " + why);
}

// The self-attention layers that prefix tuning feeds, in the order of its per-layer prefixes.
std::vector<models::SelfAttentionLayer> prefixed_attentions(models::Model& model) {
  std::vector<models::SelfAttentionLayer> out;
  for (const auto& layer : models::self_attention_layers(model))
    if (layer.hooks->takes_prefix()) out.push_back(layer);
  return out;
}

int64_t gates_per_layer(const nlohmann::json& config) {
  return config_bool(config.at(kPrefix), "shared_gating") ? 1 : 2;
}

bool gateable(const torch::nn::Module& m) {
  return linear_shape(m).has_value() || dynamic_cast<const LoraLayer*>(&m) != nullptr;
}

std::vector<std::string> lora_targets(models::Model& model, const nlohmann::json& config) {
  return find_target_modules(model, unipelt_lora_config(config), gateable);
}

class UniPeltTuner : public ModelLevelTuner {
 public:
  std::string peft_type() const override { return kType; }
  bool base_at_root() const override { return true; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    for (const char* name : {kPrefix, kAdapter, kLora})
      if (!config[name].is_object())
        fail(ErrorKind::InvalidArgument, std::string(kType) + " config field '" + name + "' must be an object, got " +
                                             config[name].dump());

    // shared_gating is UniPELT's own field of the prefix part; the rest is PREFIX_TUNING's.
    nlohmann::json prefix = fill_absent(config[kPrefix], kPrefixDefaults);
    const nlohmann::json original = prefix;
    if (!prefix["shared_gating"].is_boolean())
      bad_part_field(kPrefix, "shared_gating", "must be true or false, got " + prefix["shared_gating"].dump());
    prefix.erase("shared_gating");
    if (prefix["prefix_projection"] == true && !prefix.contains("encoder_hidden_size"))
      prefix["encoder_hidden_size"] = kProjectionWidth;
    prefix["peft_type"] = "PREFIX_TUNING";
    store_prefix_part(config, in_part(kPrefix, [&] { return prefix_tuner().normalize_config(prefix); }), original);

    nlohmann::json adapter = fill_absent(config[kAdapter], kAdapterDefaults);
    for (const auto& [field, value] : kAdapterFixed.items()) {
      if (adapter.contains(field) && adapter[field] != value)
        bad_part_field(kAdapter, field, "must be " + value.dump() + " (UniPELT gates a bottleneck of its own), got " +
                                            adapter[field].dump());
      adapter[field] = value;
    }
    adapter["peft_type"] = "BOTTLENECK";
    config[kAdapter] = stored_part(in_part(kAdapter, [&] { return adapter_tuner().normalize_config(adapter); }));

    nlohmann::json lora = fill_absent(config[kLora], kLoraDefaults);
    for (const char* field : kLoraScalingFields)
      if (lora.contains(field))
        bad_part_field(kLora, field, "does not apply: UniPELT's gate replaces LoRA's scaling alpha / r");
    for (const char* field : {"use_dora", "lora_bias"})
      if (lora.contains(field) && lora[field] != false) bad_part_field(kLora, field, "is not supported with UniPELT's gate");
    if (lora.contains("bias") && lora["bias"] != "none")
      bad_part_field(kLora, "bias", "must be \"none\" (train biases with the top-level modules_to_save)");
    if (lora.contains("modules_to_save") && !lora["modules_to_save"].is_null())
      bad_part_field(kLora, "modules_to_save", "belongs to the UNIPELT config itself");
    // Absent target_modules mean the model's query and value projections, known once the model is (resolve).
    const bool default_targets = !lora.contains("target_modules") || lora["target_modules"].is_null();
    if (default_targets) lora["target_modules"] = nlohmann::json::array();
    lora["peft_type"] = "LORA";
    nlohmann::json normalized = stored_part(in_part(kLora, [&] { return lora_tuner().normalize_config(lora); }));
    for (const char* field : kLoraScalingFields) normalized.erase(field);
    if (default_targets) normalized["target_modules"] = nullptr;
    config[kLora] = normalized;
    return config;
  }

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    store_prefix_part(config, in_part(kPrefix, [&] {
      return prefix_tuner().resolve_for_model(unipelt_prefix_config(input), model);
    }), input[kPrefix]);
    config[kAdapter] = stored_part(in_part(kAdapter, [&] {
      return adapter_tuner().resolve_for_model(unipelt_adapter_config(input), model);
    }));
    if (config[kLora]["target_modules"].is_null()) {
      auto found = kQueryValueProjections.find(model.model_type());
      if (found == kQueryValueProjections.end())
        fail(ErrorKind::InvalidArgument, std::string(kType) + " config field 'lora.target_modules' is required for " +
                                             model.model_type() + " models (peft4j knows the query and value "
                                             "projections of llama, qwen2, mistral, gpt2 and bert)");
      config[kLora]["target_modules"] = found->second;
    }
    return config;
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    in_part(kPrefix, [&] { prefix_tuner().check_model(unipelt_prefix_config(config), model); });
    in_part(kAdapter, [&] { adapter_tuner().check_model(unipelt_adapter_config(config), model); });
    const int64_t prefixes = config_int(config[kPrefix], "num_layers");
    const auto attentions = prefixed_attentions(model);
    if (model.task() != models::Task::Seq2SeqLM && static_cast<int64_t>(attentions.size()) != prefixes)
      fail(ErrorKind::Unsupported, std::string(kType) + " gates the prefixes inside attention; peft4j's " +
                                       model.model_type() + " model exposes " + std::to_string(attentions.size()) +
                                       " prefixed attention layers for " + std::to_string(prefixes) + " prefixes");
    const auto targets = lora_targets(model, config);
    if (targets.empty())
      fail(ErrorKind::InvalidArgument, std::string(kType) + " config field 'lora.target_modules' " +
                                           config[kLora]["target_modules"].dump() +
                                           " matches no Linear or Conv1D module of the model");
    const auto adapter_targets = config_strings(config[kAdapter], "target_modules").value_or(std::vector<std::string>{});
    for (const auto& key : targets)
      if (std::count(adapter_targets.begin(), adapter_targets.end(), key))
        fail(ErrorKind::InvalidArgument, std::string(kType) + ": '" + key +
                                             "' is both a LoRA target and the module the bottleneck adapter wraps; "
                                             "choose other lora.target_modules");
  }

  std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                            const nlohmann::json& config, const std::shared_ptr<AdapterState>& state,
                                            bool initialise) const override {
    auto encoder = prefix_tuner().attach(model, adapter, unipelt_prefix_config(config), state, initialise);
    attach_prefix_gates(model, adapter, config, state, *encoder);

    InjectContext adapter_ctx{adapter, unipelt_adapter_config(config), "", state, initialise, {}};
    prepare_adapter_drop(model, adapter_ctx);
    inject_part(model, adapter_tuner(), config_strings(adapter_ctx.config, "target_modules").value_or(std::vector<std::string>{}),
                adapter_ctx);

    InjectContext lora_ctx{adapter, unipelt_lora_config(config), "", state, initialise, {}};
    for (const auto& layer : inject_part(model, lora_tuner(), lora_targets(model, config), lora_ctx))
      std::dynamic_pointer_cast<LoraLayer>(layer)->add_gate(adapter);
    return encoder;
  }

  void detach(models::Model& model, const std::string& adapter, const nlohmann::json&) const override {
    for (const auto& layer : prefixed_attentions(model)) layer.hooks->set_past_hook(adapter, nullptr);
  }

  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    if (model_key.find(".adapters.") != std::string::npos) return adapter_tuner().checkpoint_key(model_key, adapter);
    return lora_tuner().checkpoint_key(model_key, adapter);
  }

  std::vector<std::pair<std::string, at::Tensor>> encoder_checkpoint(torch::nn::Module& encoder,
                                                                     const nlohmann::json& config) const override {
    auto out = prefix_tuner().encoder_checkpoint(encoder, unipelt_prefix_config(config));
    for (const auto& p : encoder.named_children()["prefix_gates"]->named_parameters(false))
      out.emplace_back("prefix_gates." + p.key(), p.value().detach().to(at::kCPU));
    return out;
  }

  std::vector<std::pair<std::string, std::string>> encoder_checkpoint_targets(
      const nlohmann::json& config) const override {
    auto out = prefix_tuner().encoder_checkpoint_targets(unipelt_prefix_config(config));
    for (const char* name : {"prefix_gates.weight", "prefix_gates.bias"}) out.emplace_back(name, name);
    return out;
  }

  nlohmann::json config_for_load(const nlohmann::json& saved) const override {
    nlohmann::json config = saved;
    if (saved.contains(kPrefix) && saved[kPrefix].is_object())
      store_prefix_part(config, prefix_tuner().config_for_load(unipelt_prefix_config(saved)), saved[kPrefix]);
    return config;
  }

  models::ModelInputs adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config, models::Model& model,
                                   const models::ModelInputs& inputs) const override {
    return prefix_tuner().adapt_inputs(encoder, unipelt_prefix_config(config), model, inputs);
  }

  bool supports_kv_cache(const nlohmann::json&) const override { return false; }

 private:
  // "prefix_gates" on the prompt encoder: weight [L, g, d] drawn N(0, 0.02) and bias [L, g] U(±1/sqrt(d)), AdapterHub's
  // per-layer nn.Linear(d, g) with its weight redrawn; each prefixed attention scales its prefix keys by gate 0 and
  // values by gate g - 1.
  static void attach_prefix_gates(models::Model& model, const std::string& adapter, const nlohmann::json& config,
                                  const std::shared_ptr<AdapterState>& state, torch::nn::Module& encoder) {
    const auto attentions = prefixed_attentions(model);
    const int64_t layers = static_cast<int64_t>(attentions.size()), gates = gates_per_layer(config);
    const int64_t width = model.hidden_size();
    auto options = encoder_embedding(encoder).options();
    auto module = std::make_shared<torch::nn::Module>();
    {
      at::NoGradGuard no_grad;
      const double bound = 1.0 / std::sqrt(static_cast<double>(width));
      module->register_parameter("weight", at::empty({layers, gates, width}, options).normal_(0.0, 0.02));
      module->register_parameter("bias", at::empty({layers, gates}, options).uniform_(-bound, bound));
    }
    encoder.register_module("prefix_gates", module);
    for (int64_t j = 0; j < layers; ++j)
      attentions[j].hooks->set_past_hook(
          adapter, [state, adapter, module, j](const models::LayerKV& past, const at::Tensor& input) {
            const auto& active = state->active;
            if (state->disabled || std::find(active.begin(), active.end(), adapter) == active.end()) return past;
            auto params = module->named_parameters(false);
            at::Tensor gate = sequence_gate(input, params["weight"][j], params["bias"][j]);  // [B, g]
            auto scale = [&](const at::Tensor& t, int64_t column) {
              return t * gate.select(1, column).view({-1, 1, 1, 1}).to(t.scalar_type());
            };
            return models::LayerKV{scale(past.key, 0), scale(past.value, gate.size(1) - 1)};
          });
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<UniPeltTuner>());

}  // namespace

nlohmann::json unipelt_prefix_config(const nlohmann::json& config) {
  nlohmann::json prefix = config_part(config, kPrefix, "PREFIX_TUNING");
  prefix.erase("shared_gating");
  return prefix;
}

nlohmann::json unipelt_adapter_config(const nlohmann::json& config) {
  return config_part(config, kAdapter, "BOTTLENECK");
}

// With LoRA's defaults for the scaling fields the stored part leaves out (the gate replaces the scaling they set).
nlohmann::json unipelt_lora_config(const nlohmann::json& config) {
  return lora_tuner().normalize_config(config_part(config, kLora, "LORA"));
}

}  // namespace peft4j::tuners
