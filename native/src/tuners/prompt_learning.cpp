#include "peft4j/tuners/prompt_learning.h"

#include <torch/nn/modules/embedding.h>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

std::shared_ptr<torch::nn::Module> ModelLevelTuner::inject(const std::shared_ptr<torch::nn::Module>&,
                                                           const InjectContext&) const {
  fail(ErrorKind::Internal, peft_type() + " adapters are attached to the whole model, not injected into modules");
}

const ModelLevelTuner* as_model_level(const Tuner& tuner) { return dynamic_cast<const ModelLevelTuner*>(&tuner); }

namespace {

// The first of `fields` that the model's config.json holds as an integer.
std::optional<int64_t> model_field(const nlohmann::json& model_config, const std::vector<std::string>& fields) {
  for (const auto& f : fields)
    if (model_config.contains(f) && model_config[f].is_number_integer()) return model_config[f].get<int64_t>();
  return std::nullopt;
}

at::Tensor ones_before(const at::Tensor& mask, int64_t count) {
  return at::cat({at::ones({mask.size(0), count}, mask.options()), mask}, 1);
}

}  // namespace

int64_t num_virtual_tokens(const nlohmann::json& config) { return config_int(config, "num_virtual_tokens"); }

int64_t total_virtual_tokens(const nlohmann::json& config) {
  return num_virtual_tokens(config) * config_int(config, "num_transformer_submodules");
}

std::shared_ptr<torch::nn::Module> embedding_encoder(int64_t rows, int64_t width) {
  auto encoder = std::make_shared<torch::nn::Module>();
  encoder->register_module("embedding", torch::nn::Embedding(rows, width));
  return encoder;
}

at::Tensor encoder_embedding(torch::nn::Module& encoder) {
  return encoder.named_children()["embedding"]->named_parameters(false)["weight"];
}

nlohmann::json PromptLearningTuner::common_defaults(const std::string& peft_type) {
  return {{"peft_type", peft_type},         {"task_type", nullptr},       {"base_model_name_or_path", nullptr},
          {"revision", nullptr},            {"inference_mode", false},    {"auto_mapping", nullptr},
          {"num_virtual_tokens", nullptr},  {"token_dim", nullptr},       {"num_transformer_submodules", nullptr},
          {"num_attention_heads", nullptr}, {"num_layers", nullptr},      {"modules_to_save", nullptr}};
}

void PromptLearningTuner::check_common(const nlohmann::json& config) {
  const std::string type = config.value("peft_type", std::string());
  if (config["num_virtual_tokens"].is_null())
    fail(ErrorKind::InvalidArgument, type + " config field 'num_virtual_tokens' is required");
  if (config_int(config, "num_virtual_tokens") <= 0)
    fail(ErrorKind::InvalidArgument, type + " config field 'num_virtual_tokens' must be positive, got " +
                                         config["num_virtual_tokens"].dump());
  for (const char* field : {"token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"})
    if (!config[field].is_null() && config_int(config, field) <= 0)
      fail(ErrorKind::InvalidArgument, type + " config field '" + field + "' must be positive, got " +
                                           config[field].dump());
  config_bool(config, "inference_mode");
}

nlohmann::json PromptLearningTuner::resolve_for_model(const nlohmann::json& input, models::Model& model) const {
  nlohmann::json config = input;
  const nlohmann::json& mc = model.config();
  auto fill = [&](const char* field, const std::vector<std::string>& names, int64_t fallback) {
    if (config[field].is_null()) config[field] = model_field(mc, names).value_or(fallback);
  };
  fill("num_layers", {"num_hidden_layers", "num_layers", "n_layer"}, model.num_layers());
  fill("token_dim", {"hidden_size", "n_embd", "d_model"}, model.hidden_size());
  if (config["num_attention_heads"].is_null()) {
    auto heads = model_field(mc, {"num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"});
    if (!heads)
      fail(ErrorKind::InvalidArgument, peft_type() + " config field 'num_attention_heads' is required: the model's "
                                                     "config.json does not name its attention heads");
    config["num_attention_heads"] = *heads;
  }
  if (config["num_transformer_submodules"].is_null())
    config["num_transformer_submodules"] = model.task() == models::Task::Seq2SeqLM ? 2 : 1;
  if (config.contains("encoder_hidden_size") && config["encoder_hidden_size"].is_null())
    config["encoder_hidden_size"] = config["token_dim"];
  return config;
}

void PromptLearningTuner::check_model(const nlohmann::json& config, models::Model& model) const {
  const int64_t token_dim = config_int(config, "token_dim");
  if (model.task() != models::Task::Seq2SeqLM && config_int(config, "num_transformer_submodules") != 1)
    fail(ErrorKind::InvalidArgument, peft_type() + " config field 'num_transformer_submodules' must be 1 for a " +
                                         model.model_type() + " model without a decoder, got " +
                                         config["num_transformer_submodules"].dump());
  if (peft_type() != "PREFIX_TUNING" && token_dim != model.hidden_size())
    fail(ErrorKind::InvalidArgument, peft_type() + " config field 'token_dim' (" + std::to_string(token_dim) +
                                         ") must equal the model's hidden size " + std::to_string(model.hidden_size()));
}

std::shared_ptr<torch::nn::Module> PromptLearningTuner::attach(models::Model& model, const std::string&,
                                                               const nlohmann::json& config,
                                                               const std::shared_ptr<AdapterState>&,
                                                               bool initialise) const {
  auto encoder = build_encoder(model, config, initialise);
  // The encoder follows the model's device; its tensors stay f32 as PEFT keeps them (the prompts are cast to the
  // model's dtype when used).
  encoder->to(model.input_embeddings().parameters().at(0).device());
  return encoder;
}

std::vector<std::pair<std::string, at::Tensor>> PromptLearningTuner::encoder_checkpoint(
    torch::nn::Module& encoder, const nlohmann::json& config) const {
  at::NoGradGuard no_grad;
  return {{"prompt_embeddings", virtual_tokens(encoder, config).detach().to(at::kCPU)}};
}

std::vector<std::pair<std::string, std::string>> PromptLearningTuner::encoder_checkpoint_targets(
    const nlohmann::json&) const {
  return {{"embedding.weight", "prompt_embeddings"}};
}

nlohmann::json PromptLearningTuner::config_for_load(const nlohmann::json& saved) const {
  nlohmann::json config = saved;
  config["inference_mode"] = true;
  return config;
}

// PEFT's forward for prompt tuning and P-tuning: the virtual tokens' embeddings go in front of the input embeddings
// (the encoder's for seq2seq), the attention mask grows by as many ones, labels by as many -100, position ids are
// dropped (the model counts positions from the start, virtual tokens included) and so are token type ids, except for
// sequence classification, which gets zeros for the virtual tokens.
models::ModelInputs PromptLearningTuner::adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config,
                                                      models::Model& model, const models::ModelInputs& in) const {
  const int64_t v = num_virtual_tokens(config);
  const models::Task task = model.task();
  models::ModelInputs out = in;
  if (out.attention_mask.defined()) out.attention_mask = ones_before(out.attention_mask, v);
  out.position_ids = at::Tensor();
  if (task != models::Task::SequenceClassification) out.token_type_ids = at::Tensor();
  // Later generation steps: the virtual tokens already sit in the cache (causal) or the encoder output (seq2seq).
  const bool continuing = task == models::Task::Seq2SeqLM
                              ? in.encoder_hidden_states.defined()
                              : in.past_key_values.has_value() && in.past_key_values->length() > 0;
  if (continuing) return out;
  at::Tensor embeds =
      in.inputs_embeds.defined() ? in.inputs_embeds : models::forward_module(model.input_embeddings(),
                                       in.input_ids.to(model.input_embeddings().parameters().at(0).device()));
  const int64_t batch = embeds.size(0);
  at::Tensor prompts = virtual_tokens(*encoder, config);
  if (task == models::Task::Seq2SeqLM) prompts = prompts.slice(0, 0, v);
  prompts = prompts.to(embeds.scalar_type()).unsqueeze(0).expand({batch, prompts.size(0), prompts.size(1)});
  out.input_ids = at::Tensor();
  out.inputs_embeds = at::cat({prompts, embeds}, 1);
  if (task == models::Task::CausalLM && in.labels.defined())
    out.labels = at::cat({at::full({batch, v}, -100, in.labels.options()), in.labels}, 1);
  if (task == models::Task::SequenceClassification && in.token_type_ids.defined())
    out.token_type_ids = at::cat({at::zeros({batch, v}, in.token_type_ids.options()), in.token_type_ids}, 1);
  return out;
}

}  // namespace peft4j::tuners
