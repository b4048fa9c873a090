// Adaption prompt. Random state: the prompts are drawn N(0, 1) from torch's global generator; the gates are zero.
#include "peft4j/tuners/adaption_prompt.h"

#include <algorithm>
#include <cmath>

#include "peft4j/error.h"
#include "peft4j/models/llama.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

const nlohmann::json kDefaults = {{"peft_type", "ADAPTION_PROMPT"}, {"task_type", nullptr},
                                  {"base_model_name_or_path", nullptr}, {"revision", nullptr},
                                  {"inference_mode", false}, {"auto_mapping", nullptr},
                                  {"target_modules", nullptr}, {"adapter_len", nullptr},
                                  {"adapter_layers", nullptr}};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The attention modules that carry the adapter: PEFT's parents whose name ends with target_modules, the last
// adapter_layers of them.
std::vector<std::pair<std::string, std::shared_ptr<models::LlamaAttentionImpl>>> adapted_attentions(
    models::Model& model, const nlohmann::json& config) {
  const std::string target = config_string(config, "target_modules");
  std::vector<std::pair<std::string, std::shared_ptr<models::LlamaAttentionImpl>>> all;
  for (const auto& item : model.named_modules("", false))
    if (ends_with(item.key(), target))
      if (auto attention = std::dynamic_pointer_cast<models::LlamaAttentionImpl>(item.value()))
        all.emplace_back(item.key(), attention);
  const int64_t layers = config_int(config, "adapter_layers");
  if (static_cast<int64_t>(all.size()) < layers)
    fail(ErrorKind::InvalidArgument, "ADAPTION_PROMPT config field 'adapter_layers' (" + std::to_string(layers) +
                                         ") exceeds the model's " + std::to_string(all.size()) + " '" + target +
                                         "' attention layers");
  return {all.end() - layers, all.end()};
}

class AdaptionPromptTuner : public ModelLevelTuner {
 public:
  std::string peft_type() const override { return "ADAPTION_PROMPT"; }
  bool base_at_root() const override { return false; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    for (const char* field : {"adapter_len", "adapter_layers"}) {
      if (config[field].is_null())
        fail(ErrorKind::InvalidArgument, std::string("ADAPTION_PROMPT config field '") + field + "' is required");
      if (config_int(config, field) <= 0)
        fail(ErrorKind::InvalidArgument, std::string("ADAPTION_PROMPT config field '") + field +
                                             "' must be positive, got " + config[field].dump());
    }
    if (!config["target_modules"].is_null() && !config["target_modules"].is_string())
      fail(ErrorKind::InvalidArgument, "ADAPTION_PROMPT config field 'target_modules' must be the attention module's "
                                       "name (a string), got " + config["target_modules"].dump());
    return config;
  }

  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    nlohmann::json config = input;
    if (config["target_modules"].is_null()) config["target_modules"] = "self_attn";
    return config;
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    const std::string type = model.model_type();
    if (type != "llama" && type != "mistral")
      fail(ErrorKind::Unsupported, "ADAPTION_PROMPT supports llama and mistral models (PEFT's llama-style attention), "
                                   "not " + type);
    if (adapted_attentions(model, config).empty())
      fail(ErrorKind::InvalidArgument, "ADAPTION_PROMPT target_modules " + config["target_modules"].dump() +
                                           " names no attention layer of the model");
  }

  std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                            const nlohmann::json& config, const std::shared_ptr<AdapterState>& state,
                                            bool) const override {
    const int64_t length = config_int(config, "adapter_len");
    const int64_t kv_heads = model.num_kv_heads(), head_dim = model.head_dim();
    auto attentions = adapted_attentions(model, config);
    for (const auto& [path, attention] : attentions)
      if (attention->named_parameters(false).contains("adaption_prompt"))
        fail(ErrorKind::Unsupported, "'" + path + "' already carries an ADAPTION_PROMPT adapter; peft4j holds one "
                                     "adaption prompt adapter at a time");
    for (const auto& [path, attention] : attentions) {
      at::Tensor weight = attention->named_children()["q_proj"]->named_parameters(false)["weight"];
      at::NoGradGuard no_grad;
      attention->register_parameter("adaption_prompt",
                                    at::empty({1, length, model.hidden_size()}, weight.options()).normal_());
      attention->register_parameter("adaption_gate", at::zeros({1}, weight.options()));
      attention->set_output_term([state, adapter, length, kv_heads, head_dim](models::LlamaAttentionImpl& attn,
                                                                               const at::Tensor& query) -> at::Tensor {
        const auto& active = state->active;
        if (state->disabled || std::find(active.begin(), active.end(), adapter) == active.end()) return at::Tensor();
        auto params = attn.named_parameters(false);
        const at::Tensor& prompt = params["adaption_prompt"];
        const int64_t batch = query.size(0), length_q = query.size(2), groups = query.size(1) / kv_heads;
        auto heads = [&](const at::Tensor& x) {
          at::Tensor h = x.view({1, length, kv_heads, head_dim}).expand({batch, length, kv_heads, head_dim});
          return h.transpose(1, 2).repeat_interleave(groups, 1);
        };
        at::Tensor key = heads(models::forward_child(attn, "k_proj", prompt));
        at::Tensor value = heads(models::forward_child(attn, "v_proj", prompt));
        at::Tensor scores =
            at::matmul(query, key.transpose(2, 3).to(query.scalar_type())) / std::sqrt(static_cast<double>(head_dim));
        scores = params["adaption_gate"] * at::softmax(scores, -1, at::kFloat).to(query.scalar_type());
        at::Tensor out = at::matmul(scores, value).transpose(1, 2).reshape({batch, length_q, -1});
        return models::forward_child(attn, "o_proj", out);
      });
    }
    return nullptr;
  }

  void detach(models::Model& model, const std::string&, const nlohmann::json& config) const override {
    for (const auto& [path, attention] : adapted_attentions(model, config)) {
      attention->set_output_term(nullptr);
      attention->remove_parameter("adaption_prompt");
      attention->remove_parameter("adaption_gate");
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> model_tensors(models::Model& model, const std::string&,
                                                                const nlohmann::json& config) const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [path, attention] : adapted_attentions(model, config)) {
      auto params = attention->named_parameters(false);
      for (const char* name : {"adaption_prompt", "adaption_gate"})
        if (const auto* p = params.find(name)) out.emplace_back(path + "." + name, *p);
    }
    return out;
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override { return config; }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<AdaptionPromptTuner>());

}  // namespace

}  // namespace peft4j::tuners
