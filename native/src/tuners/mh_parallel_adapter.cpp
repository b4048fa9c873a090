// Multi-head parallel adapter: a ModelLevelTuner whose per-layer module is a BottleneckModule (down, f, up, scaling,
// dropout) with a per-head up projection, run by each self-attention's heads hook. Random state: libtorch's default
// generator (the down and, with "bert", up initialisation; dropout).
#include "peft4j/tuners/mh_parallel_adapter.h"

#include <torch/nn/modules/linear.h>

#include <algorithm>

#include "peft4j/error.h"
#include "peft4j/tuners/bottleneck.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/delta_adapter.h"
#include "peft4j/tuners/model_level.h"

namespace peft4j::tuners {

namespace {

const char* kType = "MH_PARALLEL_ADAPTER";
const char* kDict = "mh_adapters";

const nlohmann::json kDefaults = {
    {"peft_type", kType}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"modules_to_save", nullptr}, {"bottleneck_size", 8}, {"non_linearity", "relu"},
    {"scaling", 1.0}, {"init_weights", "mam_adapter"}, {"dropout", 0.0}, {"leave_out", nlohmann::json::array()}};

std::string field(const std::string& name) { return std::string(kType) + " config field '" + name + "'"; }

// The self-attention layers that carry the adapter: all but those of the leave_out layers.
std::vector<models::SelfAttentionLayer> adapted_attentions(models::Model& model, const nlohmann::json& config) {
  const std::vector<int64_t> leave_out = leave_out_layers(config, model, kType);
  std::vector<models::SelfAttentionLayer> out;
  for (const auto& layer : models::self_attention_layers(model))
    if (!std::count(leave_out.begin(), leave_out.end(), layer_of(layer.path))) out.push_back(layer);
  return out;
}

AdapterDict* adapter_dict(torch::nn::Module& attention) {
  auto children = attention.named_children();
  const auto* found = children.find(kDict);
  return found ? dynamic_cast<AdapterDict*>(found->get()) : nullptr;
}

class MultiHeadParallelAdapterTuner : public ModelLevelTuner {
 public:
  std::string peft_type() const override { return kType; }
  bool base_at_root() const override { return false; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_defaults(input, kDefaults);
    const auto& size = config["bottleneck_size"];
    if (!size.is_number_integer() || size.get<int64_t>() < 1)
      fail(ErrorKind::InvalidArgument, field("bottleneck_size") + " (the width per head) must be a positive integer, got " +
                                           size.dump());
    const auto& non_linearity = config["non_linearity"];
    if (!non_linearity.is_string())
      fail(ErrorKind::InvalidArgument, field("non_linearity") + " must be an activation name, got " + non_linearity.dump());
    bottleneck_activation(non_linearity.get<std::string>(), field("non_linearity"));
    const auto& scaling = config["scaling"];
    if (!scaling.is_number() && scaling != "learned")
      fail(ErrorKind::InvalidArgument, field("scaling") + " must be a number or \"learned\", got " + scaling.dump());
    const std::string init = config_string(config, "init_weights");
    if (init != "mam_adapter" && init != "bert")
      fail(ErrorKind::InvalidArgument, field("init_weights") + " is '" + init + "' (mam_adapter, bert)");
    const double dropout = config_double(config, "dropout");
    if (dropout < 0 || dropout >= 1) fail(ErrorKind::InvalidArgument, field("dropout") + " must be in [0, 1)");
    if (!config["leave_out"].is_array())
      fail(ErrorKind::InvalidArgument, field("leave_out") + " must be a list of layer indices, got " +
                                           config["leave_out"].dump());
    return config;
  }

  void check_model(const nlohmann::json& config, models::Model& model) const override {
    if (models::self_attention_layers(model).empty())
      fail(ErrorKind::Unsupported, std::string(kType) + " needs self-attention layers that take a term before their "
                                   "output projection (llama/qwen2/mistral, gpt2, bert, t5); " + model.model_type() +
                                   " has none");
    if (adapted_attentions(model, config).empty())
      fail(ErrorKind::InvalidArgument, std::string(kType) + ": leave_out leaves no layer for the adapter");
  }

  std::shared_ptr<torch::nn::Module> attach(models::Model& model, const std::string& adapter,
                                            const nlohmann::json& config, const std::shared_ptr<AdapterState>& state,
                                            bool initialise) const override {
    const int64_t rank = config_int(config, "bottleneck_size");
    const std::string init = config_string(config, "init_weights");
    const std::string non_linearity = config_string(config, "non_linearity");
    const double dropout = config_double(config, "dropout");
    for (const auto& layer : adapted_attentions(model, config)) {
      const int64_t heads = layer.hooks->heads(), head_dim = layer.hooks->head_dim();
      const at::TensorOptions options = module_options(*layer.module);
      auto down = torch::nn::Linear(model.hidden_size(), heads * rank);
      auto up = std::make_shared<PerHeadUpProjection>(heads, head_dim, rank);
      if (initialise) {
        init_bottleneck_projection(down->weight, down->bias, init, false);
        init_bottleneck_projection(up->weight, up->bias, init, true);
      }
      auto module = std::make_shared<BottleneckModule>(down.ptr(), up, non_linearity, config["scaling"], heads * head_dim);
      module->set_dropout(dropout);
      module->to(options.device(), options.dtype().toScalarType());
      AdapterDict* dict = adapter_dict(*layer.module);
      if (!dict) dict = layer.module->register_module(kDict, std::make_shared<AdapterDict>()).get();
      dict->put_module(adapter, module);
      layer.hooks->set_heads_hook(adapter, [state, adapter, module](const at::Tensor& input) -> at::Tensor {
        const auto& active = state->active;
        if (state->disabled || std::find(active.begin(), active.end(), adapter) == active.end()) return at::Tensor();
        return module->delta(input);
      });
    }
    return nullptr;
  }

  // Every self-attention, not only the adapted ones, so nothing of the adapter can stay behind.
  void detach(models::Model& model, const std::string& adapter, const nlohmann::json&) const override {
    for (const auto& layer : models::self_attention_layers(model)) {
      layer.hooks->set_heads_hook(adapter, nullptr);
      AdapterDict* dict = adapter_dict(*layer.module);
      if (!dict) continue;
      dict->remove(adapter);
      if (dict->named_children().is_empty()) layer.module->unregister_module(kDict);
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> model_tensors(models::Model& model, const std::string& adapter,
                                                                const nlohmann::json& config) const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& layer : adapted_attentions(model, config)) {
      AdapterDict* dict = adapter_dict(*layer.module);
      if (!dict || !dict->contains(adapter)) continue;
      for (const auto& p : dict->module(adapter).named_parameters(true))
        out.emplace_back(layer.path + "." + kDict + "." + p.key(), p.value());
    }
    return out;
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    nlohmann::json identity = config;
    identity["init_weights"] = "mam_adapter";
    return identity;
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<MultiHeadParallelAdapterTuner>());

}  // namespace

PerHeadUpProjection::PerHeadUpProjection(int64_t heads, int64_t head_dim, int64_t rank) {
  weight = register_parameter("weight", at::zeros({heads, head_dim, rank}));
  bias = register_parameter("bias", at::zeros({heads, head_dim}));
}

at::Tensor PerHeadUpProjection::forward(const at::Tensor& input) {
  const int64_t heads = weight.size(0), head_dim = weight.size(1), rank = weight.size(2);
  std::vector<int64_t> split(input.sizes().begin(), input.sizes().end() - 1);
  std::vector<int64_t> merged = split;
  split.insert(split.end(), {heads, rank});
  merged.push_back(heads * head_dim);
  // [.., H, r] x [H, head_dim, r] -> [.., H, head_dim]
  at::Tensor out = at::einsum("...hr,hdr->...hd", {input.reshape(split), weight}) + bias;
  return out.reshape(merged);
}

}  // namespace peft4j::tuners
