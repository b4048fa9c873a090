// P-tuning. Random state: torch's default initialisation of the embedding, Linear and LSTM layers, from torch's
// global generator.
#include "peft4j/tuners/p_tuning.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

class PTuningTuner : public PromptLearningTuner {
 public:
  std::string peft_type() const override { return "P_TUNING"; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json defaults = common_defaults("P_TUNING");
    defaults.update({{"encoder_reparameterization_type", "MLP"},
                     {"encoder_hidden_size", nullptr},
                     {"encoder_num_layers", 2},
                     {"encoder_dropout", 0.0}});
    nlohmann::json config = with_defaults(input, defaults);
    check_common(config);
    const std::string type = config_string(config, "encoder_reparameterization_type");
    if (type != "MLP" && type != "LSTM")
      fail(ErrorKind::InvalidArgument, "P_TUNING config field 'encoder_reparameterization_type' must be MLP or LSTM, "
                                       "got " + config["encoder_reparameterization_type"].dump());
    if (!config["encoder_hidden_size"].is_null() && config_int(config, "encoder_hidden_size") <= 0)
      fail(ErrorKind::InvalidArgument, "P_TUNING config field 'encoder_hidden_size' must be positive, got " +
                                           config["encoder_hidden_size"].dump());
    if (config_int(config, "encoder_num_layers") <= 0)
      fail(ErrorKind::InvalidArgument, "P_TUNING config field 'encoder_num_layers' must be positive, got " +
                                           config["encoder_num_layers"].dump());
    double dropout = config_double(config, "encoder_dropout");
    if (dropout < 0 || dropout >= 1)
      fail(ErrorKind::InvalidArgument, "P_TUNING config field 'encoder_dropout' must be in [0, 1), got " +
                                           config["encoder_dropout"].dump());
    return config;
  }

  std::shared_ptr<torch::nn::Module> build_encoder(models::Model& model, const nlohmann::json& config,
                                                   bool) const override {
    using torch::nn::Linear;
    const int64_t token_dim = config_int(config, "token_dim");
    const int64_t hidden = config_int(config, "encoder_hidden_size");
    auto encoder = embedding_encoder(total_virtual_tokens(config), token_dim);
    if (config_bool(config, "inference_mode")) return encoder;
    if (config_string(config, "encoder_reparameterization_type") == "LSTM") {
      encoder->register_module(
          "lstm_head", torch::nn::LSTM(torch::nn::LSTMOptions(token_dim, hidden)
                                           .num_layers(config_int(config, "encoder_num_layers"))
                                           .dropout(config_double(config, "encoder_dropout"))
                                           .bidirectional(true)
                                           .batch_first(true)));
      encoder->register_module("mlp_head", torch::nn::Sequential(Linear(hidden * 2, hidden * 2), torch::nn::ReLU(),
                                                                 Linear(hidden * 2, token_dim)));
    } else {
      encoder->register_module("mlp_head",
                               torch::nn::Sequential(Linear(token_dim, hidden), torch::nn::ReLU(),
                                                     Linear(hidden, hidden), torch::nn::ReLU(), Linear(hidden, token_dim)));
    }
    return encoder;
  }

  at::Tensor virtual_tokens(torch::nn::Module& encoder, const nlohmann::json& config) const override {
    at::Tensor tokens = encoder_embedding(encoder);
    auto children = encoder.named_children();
    if (!children.contains("mlp_head")) return tokens;  // inference mode: the saved outputs
    at::Tensor x = tokens.unsqueeze(0);
    if (const auto* lstm = children.find("lstm_head"))
      x = std::get<0>(std::dynamic_pointer_cast<torch::nn::LSTMImpl>(*lstm)->forward(x));
    return std::dynamic_pointer_cast<torch::nn::SequentialImpl>(children["mlp_head"])->forward(x).squeeze(0);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<PTuningTuner>());

}  // namespace

}  // namespace peft4j::tuners
