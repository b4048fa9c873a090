#include "peft4j/tuners/delta_adapter.h"

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

const char* kDropKey = "adapter_drop";

bool is_llama_family(const std::string& type) { return type == "llama" || type == "qwen2" || type == "mistral"; }

}  // namespace

std::string delta_target(models::Model& model, int64_t layer, Sublayer sublayer, Insertion insertion,
                         const std::string& method) {
  const std::string type = model.model_type();
  const std::string i = std::to_string(layer);
  const bool attention = sublayer == Sublayer::Attention;
  if (is_llama_family(type) || type == "gpt2") {
    const std::string block = type == "gpt2" ? "transformer.h." + i + "." : "model.layers." + i + ".";
    if (insertion == Insertion::NormInput)
      fail(ErrorKind::Unsupported, method + ": original_ln_before = true needs a post-LN block; " + type +
                                       " is pre-LN and adds the residual outside the sublayer, so set "
                                       "original_ln_before = false (the adapter then reads the sublayer's output)");
    if (insertion == Insertion::Parallel) {
      if (attention)
        fail(ErrorKind::Unsupported, method + ": a parallel adapter at the attention (mh_adapter with is_parallel) "
                                              "needs the attention's input and output around one module, which " +
                                         type + " does not have; use output_adapter (the FFN) for parallel adapters");
      return block + "mlp";
    }
    if (type == "gpt2") return block + (attention ? "attn.c_proj" : "mlp.c_proj");
    return block + (attention ? "self_attn.o_proj" : "mlp.down_proj");
  }
  if (type == "bert") {
    const std::string block = "bert.encoder.layer." + i + "." + (attention ? "attention.output." : "output.");
    if (insertion == Insertion::Parallel)
      fail(ErrorKind::Unsupported, method + ": a parallel adapter needs the sublayer's input and output around one "
                                            "module, which BERT's post-LN blocks do not have; use is_parallel = false");
    return block + (insertion == Insertion::NormInput ? "LayerNorm" : "dense");
  }
  fail(ErrorKind::Unsupported, method + " adapters are placed on llama, qwen2, mistral, gpt2 and bert blocks, not " + type);
}

void DeltaModule::merge_into(torch::nn::Module&, bool) {
  fail(ErrorKind::Unsupported, "this adapter's Δh is not linear in the hidden state and cannot be merged");
}

DeltaLayer::DeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                       std::string peft_type)
    : AdapterLayer(std::move(base), std::move(state)), peft_type_(std::move(peft_type)) {}

void DeltaLayer::add(const std::string& adapter, std::shared_ptr<DeltaModule> delta, DeltaPlacement placement) {
  deltas_->put_module(adapter, std::move(delta));
  placements_[adapter] = std::move(placement);
}

DeltaModule& DeltaLayer::delta(const std::string& adapter) const {
  return dynamic_cast<DeltaModule&>(deltas_->module(adapter));
}

bool DeltaLayer::skipped(const std::string& adapter) {
  auto& p = placements_.at(adapter);
  if (!p.drop.defined() || !is_training()) return false;
  auto* draw = p.drop.data_ptr<int64_t>();
  if (p.draws) draw[1] = at::randint(draw[0], {1}, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
  return p.layer < draw[1];
}

at::Tensor DeltaLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  if (skipped(adapter)) return result;
  auto& d = delta(adapter);
  switch (placements_.at(adapter).insertion) {
    case Insertion::Sequential:
      return result + d.delta(result);
    case Insertion::Parallel:
      return result + d.delta(x);
    case Insertion::NormInput:
      return base_forward(x + d.delta(result));
  }
  return result;
}

bool DeltaLayer::can_merge() const {
  for (const auto& [adapter, placement] : placements_)
    if (placement.insertion != Insertion::Sequential || !delta(adapter).mergeable()) return false;
  return true;
}

void DeltaLayer::merge_adapter(const std::string& adapter) { delta(adapter).merge_into(*base_layer(), false); }

void DeltaLayer::unmerge_adapter(const std::string& adapter) { delta(adapter).merge_into(*base_layer(), true); }

std::string delta_checkpoint_key(const std::string& model_key, const std::string& adapter) {
  const std::string marker = ".adapters." + adapter + ".";
  auto pos = model_key.rfind(marker);
  if (pos == std::string::npos) return remove_adapter_name(model_key, adapter);
  return model_key.substr(0, pos) + ".adapters." + model_key.substr(pos + marker.size());
}

int64_t layer_of(const std::string& path) {
  // T5's ".block." first: in "encoder.block.3.layer.0.SelfAttention" the ".layer.0" names the sublayer.
  for (const char* marker : {".block.", ".layers.", ".h.", ".layer."}) {
    auto pos = path.find(marker);
    if (pos == std::string::npos) continue;
    pos += std::string(marker).size();
    auto end = path.find('.', pos);
    try {
      return std::stoll(path.substr(pos, end - pos));
    } catch (const std::exception&) {
      continue;
    }
  }
  fail(ErrorKind::Internal, "no layer index in module path '" + path + "'");
}

std::vector<int64_t> leave_out_layers(const nlohmann::json& config, models::Model& model, const std::string& method) {
  std::vector<int64_t> out;
  const auto& field = config["leave_out"];
  if (field.is_null()) return out;
  if (!field.is_array()) fail(ErrorKind::InvalidArgument, method + " config field 'leave_out' must be a list of layer indices");
  for (const auto& v : field) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= model.num_layers())
      fail(ErrorKind::InvalidArgument, method + " config field 'leave_out' holds " + v.dump() + "; layers are 0.." +
                                           std::to_string(model.num_layers() - 1));
    out.push_back(v.get<int64_t>());
  }
  return out;
}

nlohmann::json delta_targets(models::Model& model, const std::vector<Sublayer>& sublayers, Insertion insertion,
                             const std::vector<int64_t>& leave_out, const std::string& method) {
  nlohmann::json targets = nlohmann::json::array();
  for (int64_t layer = 0; layer < model.num_layers(); ++layer) {
    if (std::count(leave_out.begin(), leave_out.end(), layer)) continue;
    for (auto sublayer : sublayers) targets.push_back(delta_target(model, layer, sublayer, insertion, method));
  }
  if (targets.empty())
    fail(ErrorKind::InvalidArgument, method + ": leave_out leaves no layer for the adapter");
  return targets;
}

bool delta_can_wrap(const torch::nn::Module& module) {
  return dynamic_cast<const torch::nn::LinearImpl*>(&module) || dynamic_cast<const models::Conv1DImpl*>(&module) ||
         dynamic_cast<const torch::nn::LayerNormImpl*>(&module) || dynamic_cast<const DeltaLayer*>(&module) ||
         (dynamic_cast<const models::TensorModule*>(&module) && !dynamic_cast<const AdapterLayer*>(&module));
}

void prepare_adapter_drop(models::Model& model, InjectContext& context) {
  if (config_bool(context.config, "adapter_drop"))
    context.shared[kDropKey] = at::tensor(std::vector<int64_t>{model.num_layers(), 0}, at::kLong);
}

std::shared_ptr<torch::nn::Module> inject_delta(const std::shared_ptr<torch::nn::Module>& target,
                                                const InjectContext& context, const std::string& peft_type,
                                                std::shared_ptr<DeltaModule> delta, Insertion insertion) {
  auto layer = std::dynamic_pointer_cast<DeltaLayer>(target);
  if (!layer) layer = std::make_shared<DeltaLayer>(target, context.state, peft_type);
  DeltaPlacement placement;
  placement.insertion = insertion;
  placement.layer = layer_of(context.key);
  if (auto it = context.shared.find(kDropKey); it != context.shared.end()) {
    placement.drop = it->second;
    const auto& targets = context.config["target_modules"];
    placement.draws = targets.is_array() && !targets.empty() && targets[0] == context.key;
  }
  auto options = module_options(*layer->base_layer());
  delta->to(options.device(), options.dtype().toScalarType());
  layer->add(context.adapter, std::move(delta), std::move(placement));
  return layer;
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> unwrapped_modules(models::Model& model) {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  std::string inside;  // path of the adapter layer being skipped
  for (const auto& item : model.named_modules("", false)) {
    if (!inside.empty() && item.key().rfind(inside + ".", 0) == 0) continue;
    inside.clear();
    if (auto* layer = dynamic_cast<AdapterLayer*>(item.value().get())) {
      inside = item.key();
      out.emplace_back(item.key(), layer->base_layer());
    } else {
      out.emplace_back(item.key(), item.value());
    }
  }
  return out;
}

int64_t delta_width(torch::nn::Module& target) {
  auto* module = &target;
  if (auto* layer = dynamic_cast<DeltaLayer*>(module)) module = layer->base_layer().get();
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(module)) return linear->weight.size(0);
  if (auto* conv = dynamic_cast<models::Conv1DImpl*>(module)) return conv->out_features();
  if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(module)) return norm->options.normalized_shape().back();
  // A whole FFN (`mlp`): its last projection's output width.
  int64_t width = 0;
  for (const auto& p : module->named_parameters(true))
    if (p.value().dim() >= 1 && (p.key() == "down_proj.weight" || p.key() == "c_proj.weight"))
      width = p.key() == "c_proj.weight" ? p.value().size(1) : p.value().size(0);
  if (width == 0) fail(ErrorKind::Internal, "cannot tell the output width of module " + module->name());
  return width;
}

at::TensorOptions module_options(torch::nn::Module& module) {
  for (const auto& p : module.parameters(true)) return p.options();
  return at::TensorOptions();
}

}  // namespace peft4j::tuners
