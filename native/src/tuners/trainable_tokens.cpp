// Trainable tokens as PEFT 0.21 implements them (tuners/trainable_tokens). Random state: init_weights false draws
// the rows from N(0, 1) with our own generator; true (the default) copies the base rows. The exact values of an
// adapter come from its saved file, as PEFT loads them.
#include "peft4j/tuners/trainable_tokens.h"

#include <algorithm>
#include <set>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/weight_tying.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's TrainableTokensConfig with its default.
const nlohmann::json kDefaults = {{"peft_type", "TRAINABLE_TOKENS"}, {"task_type", nullptr},
                                  {"base_model_name_or_path", nullptr}, {"revision", nullptr},
                                  {"inference_mode", false},           {"auto_mapping", nullptr},
                                  {"token_indices", nlohmann::json::array()}, {"target_modules", nullptr},
                                  {"init_weights", true}};

std::vector<int64_t> token_indices(const nlohmann::json& config) { return config["token_indices"].get<std::vector<int64_t>>(); }

// The layer at `path`, wrapping the module there first when it is not one yet.
std::shared_ptr<TrainableTokensLayer> layer_at(models::Model& model, const std::string& path,
                                               const std::shared_ptr<AdapterState>& state) {
  auto target = module_at(model, path);
  auto layer = std::dynamic_pointer_cast<TrainableTokensLayer>(target);
  if (layer) return layer;
  layer = std::make_shared<TrainableTokensLayer>(target, state);
  auto [parent, child] = parent_of(model, path);
  parent->replace_module(child, layer);
  return layer;
}

class TrainableTokensTuner : public WrappingTuner<TrainableTokensLayer> {
 public:
  // init_weights true copies the base rows: the model is unchanged until trained.
  TrainableTokensTuner()
      : WrappingTuner({"TRAINABLE_TOKENS", kDefaults, kEmbedding | kLinear, {{"init_weights", true}},
                       /*requires_target_modules=*/false}) {}

  // PEFT's _prepare_adapter_config: without target_modules, the model's input embedding is the target.
  nlohmann::json resolve_for_model(const nlohmann::json& config, models::Model& model) const override {
    if (!config["target_modules"].is_null()) return config;
    nlohmann::json resolved = config;
    std::string path = input_embedding_path(model);
    resolved["target_modules"] = path.empty() ? "embed_tokens" : path;
    return resolved;
  }

  // When the input embedding is a target and the model ties other modules to its weight (tie_word_embeddings),
  // PEFT's inject_adapter wraps those too, sharing the embedding layer's rows: done here, before the targets.
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    std::string input_path = input_embedding_path(model);
    if (input_path.empty() || !std::count(targets.begin(), targets.end(), input_path)) return;
    std::vector<std::string> tied;
    for (const auto& path : modules_tied_to_input_embedding(model))
      if (can_wrap(*module_at(model, path)) || dynamic_cast<TrainableTokensLayer*>(module_at(model, path).get()))
        tied.push_back(path);
    if (tied.empty()) return;
    auto owner = layer_at(model, input_path, ctx.state);
    add(*owner, ctx);
    for (const auto& path : tied) layer_at(model, path, ctx.state)->add_tied(ctx.adapter, *owner);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    const auto& indices = config["token_indices"];
    if (!indices.is_array() || !std::all_of(indices.begin(), indices.end(), [](const nlohmann::json& i) {
          return i.is_number_integer() && i.get<int64_t>() >= 0;
        }))
      fail(ErrorKind::InvalidArgument, "TRAINABLE_TOKENS config field 'token_indices' must be a list of token ids "
                                       "(non-negative integers), got " + indices.dump());
    auto ids = indices.get<std::vector<int64_t>>();
    // A row listed twice would be written twice by index_copy, and which write wins is undefined.
    if (std::set<int64_t>(ids.begin(), ids.end()).size() != ids.size())
      fail(ErrorKind::InvalidArgument, "TRAINABLE_TOKENS config field 'token_indices' lists a token twice: " +
                                           indices.dump());
    config_bool(config, "init_weights");
  }

  void add(TrainableTokensLayer& layer, const InjectContext& ctx) const override {
    if (layer.has_adapter(ctx.adapter)) return;  // set up by prepare (tied embeddings)
    layer.add(ctx.adapter, token_indices(ctx.config), config_bool(ctx.config, "init_weights"));
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<TrainableTokensTuner>());

}  // namespace

TrainableTokensLayer::TrainableTokensLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                                           bool saves_tied)
    : AdapterLayer(base, std::move(state)), saves_tied_(saves_tied) {
  if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(base.get())) {
    if (emb->options.max_norm())
      fail(ErrorKind::Unsupported, "TRAINABLE_TOKENS on an Embedding with max_norm is not supported by peft4j");
    embedding_ = true;
  } else if (!dynamic_cast<torch::nn::LinearImpl*>(base.get())) {
    fail(ErrorKind::Unsupported, "TRAINABLE_TOKENS wraps Embedding and Linear modules only");
  }
}

bool TrainableTokensLayer::has_adapter(const std::string& adapter) const {
  return trainable_tokens_delta_->contains(adapter);
}

at::Tensor TrainableTokensLayer::weight() const { return base_layer()->named_parameters(false)["weight"]; }

void TrainableTokensLayer::add(const std::string& adapter, const std::vector<int64_t>& indices, bool from_base) {
  at::Tensor w = weight();
  for (int64_t i : indices)
    if (i < 0 || i >= w.size(0))
      fail(ErrorKind::InvalidArgument, "TRAINABLE_TOKENS config field 'token_indices' holds " + std::to_string(i) +
                                           ", outside the " + std::to_string(w.size(0)) + " rows of the embedding");
  at::NoGradGuard no_grad;
  token_indices_[adapter] = indices;
  at::Tensor original = w.index_select(0, index_tensor(adapter, w.device())).clone();
  at::Tensor values = from_base ? original.clone() : at::randn(original.sizes(), w.options().requires_grad(false));
  trainable_tokens_delta_->put_parameter(adapter, values);
  original_[adapter] = original;
}

void TrainableTokensLayer::add_tied(const std::string& adapter, const TrainableTokensLayer& owner) {
  token_indices_[adapter] = owner.token_indices_.at(adapter);
  tied_.insert(adapter);
  trainable_tokens_delta_->put_parameter(adapter, owner.delta(adapter));
  original_[adapter] = owner.original_.at(adapter);
}

at::Tensor TrainableTokensLayer::index_tensor(const std::string& adapter, const at::Device& device) const {
  return at::tensor(token_indices_.at(adapter), at::TensorOptions().dtype(at::kLong)).to(device);
}

void TrainableTokensLayer::check_disjoint(const std::vector<std::string>& adapters) const {
  std::set<int64_t> seen;
  for (const auto& adapter : adapters)
    for (int64_t i : token_indices_.at(adapter))
      if (!seen.insert(i).second)
        fail(ErrorKind::InvalidArgument, "token indices of TRAINABLE_TOKENS adapter '" + adapter +
                                             "' overlap another adapter's (token " + std::to_string(i) +
                                             "): only disjoint token indices can act together");
}

at::Tensor TrainableTokensLayer::merged_weight(const std::vector<std::string>& adapters) const {
  at::Tensor w = weight();
  for (const auto& adapter : adapters) w = w.index_copy(0, index_tensor(adapter, w.device()), delta(adapter).to(w.dtype()));
  return w;
}

at::Tensor TrainableTokensLayer::forward_with(const at::Tensor& x, const at::Tensor& w) const {
  if (!embedding_) return at::linear(x, w);  // PEFT's tied lm_head path: F.linear without a bias
  const auto& options = dynamic_cast<const torch::nn::EmbeddingImpl&>(*base_layer()).options;
  int64_t padding_idx = options.padding_idx() ? *options.padding_idx() : -1;
  return at::embedding(w, x, padding_idx, options.scale_grad_by_freq(), options.sparse());
}

at::Tensor TrainableTokensLayer::apply(const at::Tensor& x, const at::Tensor&, const std::string& adapter) {
  return forward_with(x, merged_weight({adapter}));
}

at::Tensor TrainableTokensLayer::adapted_forward(const at::Tensor& x) {
  std::vector<std::string> adapters;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) adapters.push_back(adapter);
  if (adapters.empty()) return base_forward(x);
  check_disjoint(adapters);
  return forward_with(x, merged_weight(adapters));
}

void TrainableTokensLayer::merge_adapter(const std::string& adapter) {
  std::vector<std::string> together = merged_;
  together.push_back(adapter);
  check_disjoint(together);
  at::NoGradGuard no_grad;
  at::Tensor w = weight();
  w.index_copy_(0, index_tensor(adapter, w.device()), delta(adapter).to(w.dtype()));
}

void TrainableTokensLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = weight();
  w.index_copy_(0, index_tensor(adapter, w.device()), original_.at(adapter).to(w.dtype()));
}

void TrainableTokensLayer::forget_adapter(const std::string& adapter) {
  tied_.erase(adapter);
  token_indices_.erase(adapter);
  original_.erase(adapter);
}

}  // namespace peft4j::tuners
