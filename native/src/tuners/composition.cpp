#include "peft4j/tuners/composition.h"

#include <cmath>
#include <numeric>

#include "peft4j/error.h"
#include "peft4j/tuners/adapter_fusion.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

std::vector<std::string> averaged_adapters(const nlohmann::json& config) {
  return composed_adapters(config, "average");
}

std::vector<double> average_weights(const nlohmann::json& config) {
  const size_t n = averaged_adapters(config).size();
  std::vector<double> weights(n, 1.0 / static_cast<double>(n));
  if (config.contains("average_weights") && !config["average_weights"].is_null()) {
    const auto& field = config["average_weights"];
    if (!field.is_array() || field.size() != n)
      fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'average_weights' must hold one number per averaged "
                                       "adapter (" + std::to_string(n) + "), got " + field.dump());
    for (size_t i = 0; i < n; ++i) {
      if (!field[i].is_number())
        fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'average_weights' holds " + field[i].dump());
      weights[i] = field[i].get<double>();
    }
  }
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  if (config_bool(config, "normalize_weights")) {
    if (sum == 0) fail(ErrorKind::InvalidArgument, "BOTTLENECK config field 'average_weights' sums to zero; it cannot be normalised");
    for (auto& w : weights) w /= sum;
  }
  return weights;
}

AverageModule::AverageModule(DeltaLayer& layer, std::vector<std::string> adapters, std::vector<double> weights,
                             bool sequential)
    : layer_(layer), adapters_(std::move(adapters)), weights_(std::move(weights)), sequential_(sequential) {}

at::Tensor AverageModule::delta(const at::Tensor& z) {
  at::Tensor out;
  double sum = 0;
  for (size_t j = 0; j < adapters_.size(); ++j) {
    if (!layer_.has_adapter(adapters_[j]))
      fail(ErrorKind::NotFound, "Average averages adapter '" + adapters_[j] + "', which is no longer in the model");
    at::Tensor term = layer_.delta(adapters_[j]).delta(z) * weights_[j];
    out = out.defined() ? out + term : term;
    sum += weights_[j];
  }
  // Sequential adapters read h itself: the weights' excess over one scales the shared h.
  return sequential_ && sum != 1.0 ? out + z * (sum - 1.0) : out;
}

std::shared_ptr<torch::nn::Module> inject_average(const std::shared_ptr<torch::nn::Module>& target,
                                                  const InjectContext& context) {
  auto names = averaged_adapters(context.config);
  auto weights = average_weights(context.config);
  auto layer = std::dynamic_pointer_cast<DeltaLayer>(target);
  for (const auto& name : names)
    if (!layer || !layer->has_adapter(name))
      fail(ErrorKind::InvalidArgument, "Average '" + context.adapter + "' needs a bottleneck adapter '" + name + "' at " +
                                           context.key + "; add or load the averaged adapters first, placed as the "
                                           "average is");
  const Insertion insertion = layer->placement(names[0]).insertion;
  for (const auto& name : names)
    if (layer->placement(name).insertion != insertion || insertion == Insertion::NormInput)
      fail(ErrorKind::Unsupported, "Average '" + context.adapter + "' averages adapters of one placement, sequential "
                                   "or parallel (is_parallel), without original_ln_before; '" + name + "' at " +
                                   context.key + " differs");
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  if (insertion == Insertion::Parallel && std::abs(sum - 1.0) > 1e-12)
    fail(ErrorKind::Unsupported, "Average '" + context.adapter + "': weights that do not sum to one (" +
                                     std::to_string(sum) + ") need sequential adapters; parallel adapters never see "
                                     "the sublayer output they would scale");
  auto module = std::make_shared<AverageModule>(*layer, names, weights, insertion == Insertion::Sequential);
  return inject_delta(target, context, layer->peft_type(), module, insertion);
}

namespace {

at::Tensor replicated(const at::Tensor& t, int64_t copies) {
  if (!t.defined()) return t;
  std::vector<int64_t> times(t.dim(), 1);
  times[0] = copies;
  return t.repeat(times);
}

}  // namespace

models::ModelOutput forward_parallel(PeftModel& model, const models::ModelInputs& inputs,
                                     const std::vector<std::string>& adapters) {
  if (adapters.empty()) fail(ErrorKind::InvalidArgument, "Parallel needs at least one adapter");
  if (inputs.past_key_values || inputs.encoder_hidden_states.defined())
    fail(ErrorKind::Unsupported, "Parallel runs whole forwards; a generation cache or encoder output cannot be replicated");
  const at::Tensor& reference = inputs.input_ids.defined() ? inputs.input_ids : inputs.inputs_embeds;
  if (!reference.defined()) fail(ErrorKind::InvalidArgument, "Parallel needs input_ids or inputs_embeds");
  const int64_t batch = reference.size(0);
  const auto copies = static_cast<int64_t>(adapters.size());
  models::ModelInputs wide = inputs;
  for (at::Tensor* t : {&wide.input_ids, &wide.inputs_embeds, &wide.attention_mask, &wide.position_ids,
                        &wide.token_type_ids, &wide.decoder_input_ids, &wide.decoder_inputs_embeds,
                        &wide.decoder_attention_mask, &wide.labels})
    *t = replicated(*t, copies);
  std::vector<std::string> rows;
  for (const auto& name : adapters) rows.insert(rows.end(), static_cast<size_t>(batch), name);
  return model.forward_mixed(wide, rows);
}

}  // namespace peft4j::tuners
