// aLoRA as PEFT 0.21's ALoraLinearVariant and calculate_alora_offsets (peft/tuners/lora/variants.py).
#include "peft4j/tuners/lora_alora.h"

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

int64_t alora_offset(const at::Tensor& ids, const std::vector<int64_t>& invocation) {
  at::Tensor cpu = ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t* seq = cpu.data_ptr<int64_t>();
  const int64_t n = cpu.numel(), m = static_cast<int64_t>(invocation.size());
  for (int64_t start = n - m; start >= 0; --start)
    if (std::equal(invocation.begin(), invocation.end(), seq + start)) return n - start;
  return 0;
}

namespace {

std::vector<int64_t> invocation_tokens(const nlohmann::json& config) {
  return config["alora_invocation_tokens"].get<std::vector<int64_t>>();
}

class ALoraVariant : public LoraVariant {
 public:
  // The update joins only the masked tokens: the last offsets[i] positions of row i (clipped to the length).
  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    const int64_t batch = result.size(0);
    const int64_t length = result.dim() == 3 ? result.size(1) : 1;
    const auto& rows = layer.state()->alora;
    auto it = rows.find(adapter);
    if (it == rows.end() || !it->second.offsets.defined()) return result;
    at::Tensor offsets = it->second.offsets.to(result.device());
    if (offsets.size(0) != batch)
      fail(ErrorKind::Internal, "aLoRA offsets for " + std::to_string(offsets.size(0)) + " rows, the batch has " +
                                    std::to_string(batch));
    at::Tensor position = at::arange(length, offsets.options()).unsqueeze(0);
    at::Tensor mask = position.ge((length - offsets.clamp_max(length)).unsqueeze(1));
    at::Tensor index = mask.reshape({-1}).nonzero().squeeze(1);
    at::Tensor flat = result.reshape({-1, result.size(-1)});
    if (index.numel() == 0) return result;
    at::Tensor selected = x.reshape({-1, x.size(-1)}).index_select(0, index);
    at::Tensor h = models::forward_module(layer.lora_A_module(adapter), layer.dropped(adapter, selected));
    at::Tensor delta = models::forward_module(layer.lora_B_module(adapter), h) * layer.scaling(adapter);
    return flat.index_add(0, index, delta.to(flat.scalar_type())).view(result.sizes());
  }

  std::string merge_refusal() const override {
    return "aLoRA adapters (alora_invocation_tokens) cannot be merged into the base weights: the adapter acts only "
           "from its invocation tokens on, which no weight expresses";
  }
};

std::shared_ptr<LoraVariant> make(LoraLayer&, const std::string&, const nlohmann::json&, const std::string&, bool) {
  return std::make_shared<ALoraVariant>();
}

void validate(nlohmann::json& config) {
  const auto& tokens = config["alora_invocation_tokens"];
  if (!tokens.is_array() || !std::all_of(tokens.begin(), tokens.end(), [](const nlohmann::json& t) {
        return t.is_number_integer() && t.get<int64_t>() >= 0;
      }))
    fail(ErrorKind::InvalidArgument, "LORA config field 'alora_invocation_tokens' must be a list of token ids, got " +
                                         tokens.dump());
  if (config["task_type"] != "CAUSAL_LM") warn("aLoRA is currently only supported for CAUSAL_LM task.");
}

void before_forward(const std::string& adapter, const nlohmann::json& config, const models::ModelInputs& inputs,
                    const at::Tensor& rows, AdapterState& state) {
  AdapterState::ALoraRows& entry = state.alora[adapter];
  if (!inputs.input_ids.defined()) {
    warn("Cannot calculate aLoRA offsets when only inputs_embeds are provided. Disabling aLoRA for this forward pass.");
    entry = {};
    return;
  }
  at::Tensor ids = rows.defined() ? inputs.input_ids.index_select(0, rows.to(inputs.input_ids.device()))
                                  : inputs.input_ids;
  const std::vector<int64_t> invocation = invocation_tokens(config);
  const int64_t count = ids.size(0), length = ids.size(1);
  std::vector<int64_t> offsets(count);
  for (int64_t i = 0; i < count; ++i) offsets[i] = alora_offset(ids[i], invocation);
  at::Tensor found = at::tensor(offsets, at::TensorOptions().dtype(at::kLong));
  const int64_t past = inputs.past_key_values ? inputs.past_key_values->length() : 0;
  // A cache continues the forward recorded last when its length and rows are those that forward left.
  const bool continues = past > 0 && entry.invoked.defined() && entry.invoked.size(0) == count &&
                         entry.cache_length == past;
  at::Tensor invoked = found.gt(0);
  if (continues) {
    found = at::where(entry.invoked, at::full_like(found, length), found);
    invoked = invoked.logical_or(entry.invoked);
  }
  entry.offsets = found;
  entry.invoked = invoked;
  entry.cache_length = past + length;
}

[[maybe_unused]] const bool registered = [] {
  LoraVariantSpec spec{"alora_invocation_tokens", nullptr, validate, make};
  spec.before_forward = before_forward;
  return register_lora_variant(std::move(spec));
}();

}  // namespace

}  // namespace peft4j::tuners
