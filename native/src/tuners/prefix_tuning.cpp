// Prefix tuning. Random state: torch's default initialisation of the embedding (and projection) from torch's global
// generator; init_weights "zero" zeroes the table (or the projection's last layer).
#include "peft4j/tuners/prefix_tuning.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <set>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

std::vector<models::LayerKV> prefix_layers(const at::Tensor& table, const nlohmann::json& config, int64_t batch,
                                           int64_t model_layers, bool seq2seq) {
  const int64_t v = num_virtual_tokens(config);
  const int64_t layers = config_int(config, "num_layers");
  const int64_t heads = config_int(config, "num_attention_heads");
  const int64_t head_dim = config_int(config, "token_dim") / heads;
  // [V, 2L, heads, head_dim] -> [2L, heads, V, head_dim]
  at::Tensor blocks = table.reshape({v, 2 * layers, heads, head_dim}).permute({1, 2, 0, 3});
  std::vector<models::LayerKV> out;
  for (int64_t j = 0; j < model_layers; ++j) {
    const int64_t block = seq2seq ? (4 * j) % (2 * layers) : 2 * j;
    out.push_back({blocks[block].unsqueeze(0).expand({batch, heads, v, head_dim}),
                   blocks[block + 1].unsqueeze(0).expand({batch, heads, v, head_dim})});
  }
  return out;
}

namespace {

const std::set<std::string> kPrefixModelTypes = {"llama", "qwen2", "mistral", "gpt2", "bert", "t5"};

at::Tensor ones_before(const at::Tensor& mask, int64_t count) {
  return at::cat({at::ones({mask.size(0), count}, mask.options()), mask}, 1);
}

class PrefixTuningTuner : public PromptLearningTuner {
 public:
  std::string peft_type() const override { return "PREFIX_TUNING"; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json defaults = common_defaults("PREFIX_TUNING");
    defaults.update({{"encoder_hidden_size", nullptr}, {"prefix_projection", false}, {"init_weights", nullptr}});
    nlohmann::json config = with_defaults(input, defaults);
    check_common(config);
    config_bool(config, "prefix_projection");
    if (!config["init_weights"].is_null() && config["init_weights"] != "zero")
      fail(ErrorKind::InvalidArgument, "PREFIX_TUNING config field 'init_weights' must be null or \"zero\", got " +
                                           config["init_weights"].dump());
    if (!config["encoder_hidden_size"].is_null() && config_int(config, "encoder_hidden_size") <= 0)
      fail(ErrorKind::InvalidArgument, "PREFIX_TUNING config field 'encoder_hidden_size' must be positive, got " +
                                           config["encoder_hidden_size"].dump());
    return config;
  }

  // PEFT sizes prefixes for grouped-query attention by num_key_value_heads (token_dim = head_dim x kv heads), and
  // fills encoder_hidden_size with the resulting token_dim.
  nlohmann::json resolve_for_model(const nlohmann::json& input, models::Model& model) const override {
    const bool fill_hidden = input.value("encoder_hidden_size", nlohmann::json()).is_null();
    nlohmann::json config = PromptLearningTuner::resolve_for_model(input, model);
    const nlohmann::json& mc = model.config();
    if (mc.contains("num_key_value_heads") && mc["num_key_value_heads"].is_number_integer()) {
      const int64_t kv_heads = mc["num_key_value_heads"].get<int64_t>();
      const int64_t head_dim = mc.contains("head_dim") && mc["head_dim"].is_number_integer()
                                   ? mc["head_dim"].get<int64_t>()
                                   : config_int(config, "token_dim") / config_int(config, "num_attention_heads");
      config["token_dim"] = head_dim * kv_heads;
      config["num_attention_heads"] = kv_heads;
    }
    if (fill_hidden) config["encoder_hidden_size"] = config["token_dim"];
    return config;
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    PromptLearningTuner::check_model(config, model);
    if (!kPrefixModelTypes.count(model.model_type()))
      fail(ErrorKind::Unsupported, "PREFIX_TUNING needs access to every attention layer's keys and values; peft4j's " +
                                       model.model_type() + " model does not take them (llama, qwen2, mistral, gpt2, "
                                       "bert, t5 do)");
    const int64_t token_dim = config_int(config, "token_dim");
    const int64_t heads = config_int(config, "num_attention_heads");
    const int64_t layers = config_int(config, "num_layers");
    if (!config_bool(config, "prefix_projection") && !config["encoder_hidden_size"].is_null() &&
        config_int(config, "encoder_hidden_size") != token_dim)
      fail(ErrorKind::InvalidArgument, "PREFIX_TUNING config field 'encoder_hidden_size' (" +
                                           config["encoder_hidden_size"].dump() +
                                           ") only sizes the projection, and prefix_projection is false; set "
                                           "prefix_projection true or leave encoder_hidden_size unset");
    if (heads != model.num_kv_heads() || token_dim != heads * model.head_dim())
      fail(ErrorKind::InvalidArgument, "PREFIX_TUNING prefixes of " + std::to_string(heads) + " heads x " +
                                           std::to_string(token_dim / std::max<int64_t>(heads, 1)) +
                                           " (num_attention_heads, token_dim) do not fit the model's " +
                                           std::to_string(model.num_kv_heads()) + " key/value heads x " +
                                           std::to_string(model.head_dim()));
    if (model.task() != models::Task::Seq2SeqLM && layers != model.num_layers())
      fail(ErrorKind::InvalidArgument, "PREFIX_TUNING config field 'num_layers' (" + std::to_string(layers) +
                                           ") must equal the model's " + std::to_string(model.num_layers()) +
                                           " attention layers");
  }

  std::shared_ptr<torch::nn::Module> build_encoder(models::Model&, const nlohmann::json& config,
                                                   bool initialise) const override {
    using torch::nn::Linear;
    const int64_t v = num_virtual_tokens(config);
    const int64_t token_dim = config_int(config, "token_dim");
    const int64_t width = config_int(config, "num_layers") * 2 * token_dim;
    const bool zero = initialise && config["init_weights"] == "zero";
    at::NoGradGuard no_grad;
    if (config_bool(config, "prefix_projection") && !config_bool(config, "inference_mode")) {
      const int64_t hidden = config_int(config, "encoder_hidden_size");
      auto encoder = embedding_encoder(v, token_dim);
      auto last = Linear(hidden, width);
      encoder->register_module("transform", torch::nn::Sequential(Linear(token_dim, hidden), torch::nn::Tanh(), last));
      if (zero) {
        last->weight.zero_();
        last->bias.zero_();
      }
      return encoder;
    }
    auto encoder = embedding_encoder(v, width);
    if (zero) encoder_embedding(*encoder).zero_();
    return encoder;
  }

  at::Tensor virtual_tokens(torch::nn::Module& encoder, const nlohmann::json&) const override {
    at::Tensor tokens = encoder_embedding(encoder);
    auto children = encoder.named_children();
    if (!children.contains("transform")) return tokens;
    return std::dynamic_pointer_cast<torch::nn::SequentialImpl>(children["transform"])->forward(tokens);
  }

  // PEFT's prefix forward: the prefixes become past keys/values (unless a generation cache already holds them), the
  // attention mask covers them, position ids move past them; sequence classification keeps token type ids.
  models::ModelInputs adapt_inputs(torch::nn::Module* encoder, const nlohmann::json& config, models::Model& model,
                                   const models::ModelInputs& in) const override {
    const int64_t v = num_virtual_tokens(config);
    const models::Task task = model.task();
    models::ModelInputs out = in;
    if (out.position_ids.defined()) out.position_ids = out.position_ids + v;
    if (task != models::Task::SequenceClassification) out.token_type_ids = at::Tensor();
    if (task == models::Task::Seq2SeqLM) {
      if (out.decoder_attention_mask.defined()) out.decoder_attention_mask = ones_before(out.decoder_attention_mask, v);
    } else if (out.attention_mask.defined()) {
      out.attention_mask = ones_before(out.attention_mask, v);
    }
    if (in.past_key_values && in.past_key_values->length() > 0) return out;
    const at::Tensor& reference = in.input_ids.defined() ? in.input_ids : in.inputs_embeds;
    const int64_t batch = reference.defined() ? reference.size(0) : in.decoder_input_ids.size(0);
    const auto dtype = model.input_embeddings().parameters().at(0).scalar_type();
    at::Tensor table = virtual_tokens(*encoder, config).to(dtype);
    models::PastKeyValues past = in.past_key_values.value_or(models::PastKeyValues{});
    if (task == models::Task::Seq2SeqLM) {
      past.self_attn = prefix_layers(table, config, batch, decoder_layers(model), true);
    } else if (task == models::Task::SequenceClassification) {
      past.encoder_self_attn = prefix_layers(table, config, batch, model.num_layers(), false);
    } else {
      past.self_attn = prefix_layers(table, config, batch, model.num_layers(), false);
    }
    out.past_key_values = past;
    return out;
  }

 private:
  static int64_t decoder_layers(models::Model& model) {
    const nlohmann::json& mc = model.config();
    if (mc.contains("num_decoder_layers") && mc["num_decoder_layers"].is_number_integer())
      return mc["num_decoder_layers"].get<int64_t>();
    return model.num_layers();
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PrefixTuningTuner>());

}  // namespace

}  // namespace peft4j::tuners
