#include "peft4j/models/generation.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <limits>
#include <string>

#include "peft4j/error.h"

namespace peft4j::models {

namespace {

using nlohmann::json;

std::optional<int64_t> token_field(const json& config, const std::string& name) {
  auto it = config.find(name);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) fail(ErrorKind::Format, "generation field '" + name + "' must be a token id, got " + it->dump());
  return it->get<int64_t>();
}

void validate(const GenerationConfig& config) {
  auto bad = [](const std::string& message) { fail(ErrorKind::InvalidArgument, "generation: " + message); };
  if (config.max_new_tokens <= 0) bad("max_new_tokens must be positive, got " + std::to_string(config.max_new_tokens));
  if (config.repetition_penalty <= 0)
    bad("repetition_penalty must be positive, got " + std::to_string(config.repetition_penalty));
  if (!config.do_sample) return;
  if (!(config.temperature > 0)) bad("temperature must be positive, got " + std::to_string(config.temperature));
  if (config.top_k < 0) bad("top_k must be >= 0, got " + std::to_string(config.top_k));
  if (!(config.top_p >= 0 && config.top_p <= 1)) bad("top_p must lie in [0, 1], got " + std::to_string(config.top_p));
}

// transformers' logits processors, in the order generate() applies them.
at::Tensor process_scores(const at::Tensor& sequence, at::Tensor scores, const GenerationConfig& config) {
  const double minus_inf = -std::numeric_limits<double>::infinity();
  if (config.repetition_penalty != 1.0) {
    // Every token already in the row: negative scores are multiplied, positive ones divided by the penalty.
    at::Tensor seen = scores.gather(1, sequence);
    seen = at::where(seen.lt(0), seen * config.repetition_penalty, seen / config.repetition_penalty);
    scores = scores.scatter(1, sequence, seen);
  }
  if (!config.do_sample) return scores;
  if (config.temperature != 1.0) scores = scores / config.temperature;
  if (config.top_k != 0) {
    const int64_t k = std::min(config.top_k, scores.size(-1));
    at::Tensor kth = std::get<0>(scores.topk(k)).slice(-1, k - 1);
    scores = scores.masked_fill(scores.lt(kth), minus_inf);
  }
  if (config.top_p < 1.0) {
    // Drop the least likely tokens whose cumulative probability stays within 1 - top_p; keep at least one.
    auto [sorted, order] = scores.sort(-1, /*descending=*/false);
    at::Tensor drop = sorted.softmax(-1).cumsum(-1).le(1 - config.top_p);
    drop.slice(-1, -1).fill_(false);
    scores = scores.masked_fill(drop.scatter(1, order, drop), minus_inf);
  }
  return scores;
}

}  // namespace

GenerationConfig GenerationConfig::from_json(const json& config) {
  GenerationConfig result;
  if (!config.is_object()) fail(ErrorKind::Format, "generation config is not a JSON object");
  auto eos = config.find("eos_token_id");
  if (eos != config.end() && !eos->is_null()) {
    if (eos->is_number_integer()) {
      result.eos_token_ids.push_back(eos->get<int64_t>());
    } else if (eos->is_array()) {
      for (const auto& id : *eos) {
        if (!id.is_number_integer())
          fail(ErrorKind::Format, "generation field 'eos_token_id' must hold token ids, got " + eos->dump());
        result.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      fail(ErrorKind::Format, "generation field 'eos_token_id' must be a token id or a list, got " + eos->dump());
    }
  }
  result.pad_token_id = token_field(config, "pad_token_id");
  result.decoder_start_token_id = token_field(config, "decoder_start_token_id");
  return result;
}

at::Tensor generate(Model& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationConfig& config) {
  validate(config);
  if (model.task() == Task::SequenceClassification)
    fail(ErrorKind::Unsupported, "generation needs a causal or seq2seq LM; " + model.model_type() +
                                     " is a sequence classification model");
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) == 0 || input_ids.size(1) == 0)
    fail(ErrorKind::InvalidArgument, "generation: input_ids must be a non-empty [batch, length] tensor");
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    fail(ErrorKind::InvalidArgument, "generation: attention_mask has shape " + c10::str(attention_mask.sizes()) +
                                         ", input_ids " + c10::str(input_ids.sizes()));
  at::NoGradGuard no_grad;
  const at::Device device = model.parameters().front().device();
  const at::Tensor ids = input_ids.to(device, at::kLong);
  const at::Tensor mask = attention_mask.defined() ? attention_mask.to(device, at::kLong) : at::ones_like(ids);
  const int64_t batch = ids.size(0);
  const auto long_options = ids.options();

  const bool stops = !config.eos_token_ids.empty();
  const at::Tensor eos = stops ? at::tensor(config.eos_token_ids, long_options) : at::Tensor();
  const int64_t pad = config.pad_token_id.value_or(stops ? config.eos_token_ids.front() : 0);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(config.seed);

  const bool seq2seq = model.task() == Task::Seq2SeqLM;
  at::Tensor sequence = ids;
  at::Tensor self_mask = mask;  // causal: grows with the sequence
  at::Tensor positions = (mask.cumsum(-1) - 1).masked_fill(mask.eq(0), 0);
  at::Tensor encoder_hidden;
  if (seq2seq) {
    std::optional<int64_t> start = config.decoder_start_token_id;
    if (!start && model.config().is_object()) start = token_field(model.config(), "decoder_start_token_id");
    if (!start)
      fail(ErrorKind::InvalidArgument, "generation: " + model.model_type() +
                                           " needs a decoder_start_token_id (in the generation or model config)");
    sequence = at::full({batch, 1}, *start, long_options);
  }

  at::Tensor unfinished = at::ones({batch}, long_options.dtype(at::kBool));
  // A model that cannot extend its computation token by token (see Model::supports_kv_cache) recomputes.
  const bool use_cache = config.use_cache && model.supports_kv_cache();
  std::optional<PastKeyValues> cache;
  for (int64_t step = 0; step < config.max_new_tokens; ++step) {
    ModelInputs inputs;
    inputs.use_cache = use_cache;
    const bool incremental = cache.has_value();
    at::Tensor step_tokens = incremental ? sequence.slice(1, -1) : sequence;
    if (seq2seq) {
      inputs.attention_mask = mask;
      if (encoder_hidden.defined())
        inputs.encoder_hidden_states = encoder_hidden;
      else
        inputs.input_ids = ids;
      inputs.decoder_input_ids = step_tokens;
    } else {
      inputs.input_ids = step_tokens;
      inputs.attention_mask = self_mask;
      inputs.position_ids = incremental ? positions.slice(1, -1) : positions;
    }
    if (incremental) inputs.past_key_values = std::move(cache);
    ModelOutput output = model.forward(inputs);
    if (seq2seq && !encoder_hidden.defined()) {
      if (!output.encoder_hidden_states.defined())
        fail(ErrorKind::Internal, model.model_type() + " returned no encoder_hidden_states to generate with");
      encoder_hidden = output.encoder_hidden_states;
    }
    if (use_cache) {
      if (!output.past_key_values)
        fail(ErrorKind::Internal, model.model_type() + " returned no past_key_values although use_cache was set");
      cache = std::move(output.past_key_values);
    }

    at::Tensor scores = process_scores(sequence, output.logits.select(1, -1).to(at::kFloat), config);
    at::Tensor next;
    if (config.do_sample)
      next = at::multinomial(scores.softmax(-1).cpu(), 1, /*replacement=*/false, generator).squeeze(1).to(device);
    else
      next = scores.argmax(-1);
    if (stops) next = at::where(unfinished, next, at::full_like(next, pad));
    sequence = at::cat({sequence, next.unsqueeze(1)}, 1);
    if (!seq2seq) {
      self_mask = at::cat({self_mask, at::ones({batch, 1}, long_options)}, 1);
      positions = at::cat({positions, positions.slice(1, -1) + 1}, 1);
    }
    if (stops) {
      unfinished = unfinished.logical_and(at::isin(next, eos).logical_not());
      if (!unfinished.any().item<bool>()) break;
    }
  }
  return sequence;
}

}  // namespace peft4j::models
