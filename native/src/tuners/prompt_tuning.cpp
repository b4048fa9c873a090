// Prompt tuning. Random state: RANDOM draws the table from torch's global generator (N(0, 1)), SAMPLE_VOCAB draws
// the token ids from it.
#include "peft4j/tuners/prompt_tuning.h"

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

std::vector<int64_t> prompt_init_token_ids(const std::vector<int64_t>& text_ids, int64_t count) {
  if (text_ids.empty())
    fail(ErrorKind::InvalidArgument, "PROMPT_TUNING TEXT initialisation needs at least one token id");
  std::vector<int64_t> ids;
  while (static_cast<int64_t>(ids.size()) < count) ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  ids.resize(count);
  return ids;
}

namespace {

class PromptTuningTuner : public PromptLearningTuner {
 public:
  std::string peft_type() const override { return "PROMPT_TUNING"; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json defaults = common_defaults("PROMPT_TUNING");
    defaults.update({{"prompt_tuning_init", "RANDOM"},
                     {"prompt_tuning_init_text", nullptr},
                     {"tokenizer_name_or_path", nullptr},
                     {"tokenizer_kwargs", nullptr}});
    // prompt_tuning_init_token_ids is peft4j's: TEXT's ids, tokenized by the caller (PEFT tokenizes in Python).
    nlohmann::json config = with_defaults(input, defaults, {"prompt_tuning_init_token_ids"});
    check_common(config);
    const std::string init = config_string(config, "prompt_tuning_init");
    if (init != "RANDOM" && init != "TEXT" && init != "SAMPLE_VOCAB")
      fail(ErrorKind::InvalidArgument, "PROMPT_TUNING config field 'prompt_tuning_init' must be RANDOM, TEXT or "
                                       "SAMPLE_VOCAB, got " + config["prompt_tuning_init"].dump());
    if (init == "TEXT" && !config_bool(config, "inference_mode")) {
      const auto& ids = config.value("prompt_tuning_init_token_ids", nlohmann::json());
      if (!ids.is_array() || ids.empty())
        fail(ErrorKind::InvalidArgument, "PROMPT_TUNING with prompt_tuning_init TEXT needs "
                                         "'prompt_tuning_init_token_ids', the token ids of prompt_tuning_init_text "
                                         "(the Java PromptTuningConfig tokenizes the text)");
      for (const auto& id : ids)
        if (!id.is_number_integer())
          fail(ErrorKind::InvalidArgument, "PROMPT_TUNING config field 'prompt_tuning_init_token_ids' must be a list "
                                           "of integers, got " + ids.dump());
    }
    return config;
  }

  std::shared_ptr<torch::nn::Module> build_encoder(models::Model& model, const nlohmann::json& config,
                                                   bool initialise) const override {
    const int64_t rows = total_virtual_tokens(config);
    auto encoder = embedding_encoder(rows, config_int(config, "token_dim"));
    const std::string init = config_string(config, "prompt_tuning_init");
    if (!initialise || init == "RANDOM" || config_bool(config, "inference_mode")) return encoder;
    at::Tensor ids;
    const int64_t vocab = model.vocab_size();
    if (init == "SAMPLE_VOCAB") {
      ids = at::randint(0, vocab, {rows}, at::TensorOptions().dtype(at::kLong));
    } else {
      auto text_ids = prompt_init_token_ids(config["prompt_tuning_init_token_ids"].get<std::vector<int64_t>>(), rows);
      for (int64_t id : text_ids)
        if (id < 0 || id >= vocab)
          fail(ErrorKind::InvalidArgument, "PROMPT_TUNING token id " + std::to_string(id) +
                                               " of 'prompt_tuning_init_token_ids' is outside the vocabulary (" +
                                               std::to_string(vocab) + " tokens)");
      ids = at::tensor(text_ids, at::TensorOptions().dtype(at::kLong));
    }
    at::NoGradGuard no_grad;
    at::Tensor rows_of_vocab =
        models::forward_module(model.input_embeddings(), ids.to(model.input_embeddings().parameters().at(0).device()));
    encoder_embedding(*encoder).copy_(rows_of_vocab.to(at::kFloat));
    return encoder;
  }

  at::Tensor virtual_tokens(torch::nn::Module& encoder, const nlohmann::json&) const override {
    return encoder_embedding(encoder);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PromptTuningTuner>());

}  // namespace

}  // namespace peft4j::tuners
