#include "model_api.h"

#include <set>
#include <unordered_set>
#include <vector>

#include "access.h"
#include "guard.h"
#include "inputs.h"
#include "peft4j/files.h"
#include "peft4j/models/generation.h"
#include "peft4j/models/model.h"

namespace peft4j::api {


namespace {

ModelState& state_of(const std::shared_ptr<ModelState>& state) {
  if (!state) fail(ErrorKind::InvalidArgument, "model handle is empty (closed or never loaded)");
  return *state;
}

at::Device device_of(models::Model& model) {
  auto parameters = model.parameters();
  return parameters.empty() ? at::Device(at::kCPU) : parameters.front().device();
}

}  // namespace

GenerationOptions::GenerationOptions() {
  const models::GenerationConfig defaults;
  maxNewTokens = defaults.max_new_tokens;
  doSample = defaults.do_sample;
  temperature = defaults.temperature;
  topK = defaults.top_k;
  topP = defaults.top_p;
  repetitionPenalty = defaults.repetition_penalty;
  eosTokenIdsGiven = false;
  padTokenIdGiven = false;
  padTokenId = 0;
  seed = static_cast<int64_t>(defaults.seed);
}

ModelOutputHandle::ModelOutputHandle() = default;
TensorHandle ModelOutputHandle::logits() const { return guard([&] { return logits_; }); }
bool ModelOutputHandle::hasLoss() const { return guard([&] { return loss_.defined(); }); }
TensorHandle ModelOutputHandle::loss() const {
  return guard([&] {
    if (!loss_.defined()) fail(ErrorKind::InvalidArgument, "the forward call had no labels, so it has no loss");
    return loss_;
  });
}

ModelHandle::ModelHandle() = default;

ModelHandle ModelHandle::load(const std::string& dir) {
  return guard([&] {
    auto state = std::make_shared<ModelState>();
    state->model = models::load_model(dir);
    state->model->eval();
    std::string generation_file = io::join_path(dir, "generation_config.json");
    state->generation_defaults = models::GenerationConfig::from_json(
        io::is_regular_file(generation_file) ? io::read_json_file(generation_file) : state->model->config());
    ModelHandle handle;
    handle.state_ = std::move(state);
    return handle;
  });
}

std::string ModelHandle::modelType() const { return guard([&] { return state_of(state_).model->model_type(); }); }

int64_t ModelHandle::parameterCount() const {
  return guard([&] {
    // Tied weights are one tensor registered under two names; count each storage once.
    std::unordered_set<const void*> seen;
    int64_t count = 0;
    for (const auto& p : state_of(state_).model->parameters(/*recurse=*/true))
      if (seen.insert(p.unsafeGetTensorImpl()).second) count += p.numel();
    return count;
  });
}

ModelOutputHandle ModelHandle::forward(const TensorHandle& inputIds, const TensorHandle& attentionMask,
                                       const TensorHandle& tokenTypeIds, const TensorHandle& positionIds,
                                       const TensorHandle& labels, const TensorHandle& decoderInputIds) const {
  return guard([&] {
    models::Model& model = *state_of(state_).model;
    const at::Device device = device_of(model);
    models::ModelInputs inputs;
    inputs.input_ids = token_ids(inputIds, "input_ids", model.vocab_size(), device, /*required=*/true);
    inputs.attention_mask = attention_mask(attentionMask, device);
    inputs.token_type_ids = index_input(tokenTypeIds, "token_type_ids", device);
    inputs.position_ids = index_input(positionIds, "position_ids", device);
    inputs.decoder_input_ids =
        token_ids(decoderInputIds, "decoder_input_ids", model.vocab_size(), device, /*required=*/false);
    at::Tensor label_tensor = Access::optional_tensor(labels);
    if (label_tensor.defined())
      inputs.labels = at::isFloatingType(label_tensor.scalar_type()) ? label_tensor.to(device)
                                                                     : index_input(labels, "labels", device);
    at::NoGradGuard no_grad;
    models::ModelOutput output = model.forward(inputs);
    ModelOutputHandle result;
    result.logits_ = Access::wrap(output.logits);
    if (output.loss.defined()) result.loss_ = Access::wrap(output.loss);
    return result;
  });
}

TensorHandle ModelHandle::generate(const TensorHandle& inputIds, const TensorHandle& attentionMask,
                                   const GenerationOptions& options, const int64_t* eosTokenIds, int eosCount) const {
  return guard([&] {
    const ModelState& state = state_of(state_);
    models::GenerationConfig config = state.generation_defaults;
    config.max_new_tokens = options.maxNewTokens;
    config.do_sample = options.doSample;
    config.temperature = options.temperature;
    config.top_k = options.topK;
    config.top_p = options.topP;
    config.repetition_penalty = options.repetitionPenalty;
    config.seed = static_cast<uint64_t>(options.seed);
    if (options.eosTokenIdsGiven) {
      if (eosCount < 0 || (eosCount > 0 && !eosTokenIds))
        fail(ErrorKind::InvalidArgument, "eos token ids: " + std::to_string(eosCount) + " ids at a null pointer");
      config.eos_token_ids.assign(eosTokenIds, eosTokenIds + eosCount);
    }
    if (options.padTokenIdGiven) config.pad_token_id = options.padTokenId;
    const at::Device device = device_of(*state.model);
    at::Tensor ids = token_ids(inputIds, "input_ids", state.model->vocab_size(), device, /*required=*/true);
    return Access::wrap(models::generate(*state.model, ids, attention_mask(attentionMask, device), config));
  });
}

void ModelHandle::save(const std::string& dir) const {
  guard([&] {
    if (!state_) fail(ErrorKind::InvalidArgument, "model handle is empty (closed or never loaded)");
    if (!io::is_directory(dir)) fail(ErrorKind::InvalidArgument, "cannot save the model into '" + dir + "': not a directory");
    models::Model& model = *state_->model;
    io::TensorMap tensors;
    std::set<const void*> saved;
    // Every tensor load_weights requires; an optional one only when it is a parameter of its own (T5's untied
    // lm_head), not a second name for a saved tensor (a tied lm_head) nor a buffer the model recomputes.
    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
      if (model.is_optional_key(item.key())) continue;
      tensors.emplace(item.key(), item.value().detach());
      saved.insert(item.value().data_ptr());
    }
    for (const auto& item : model.named_buffers(/*recurse=*/true))
      if (!model.is_optional_key(item.key())) tensors.emplace(item.key(), item.value());
    for (const auto& item : model.named_parameters(/*recurse=*/true))
      if (model.is_optional_key(item.key()) && !saved.count(item.value().data_ptr()))
        tensors.emplace(item.key(), item.value().detach());
    io::write_safetensors(io::join_path(dir, "model.safetensors"), tensors, {{"format", "pt"}});
    io::write_text_file_atomic(io::join_path(dir, "config.json"), model.config().dump(2) + "\n");
  });
}

}  // namespace peft4j::api
