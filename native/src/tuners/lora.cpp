#include "peft4j/tuners/lora.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/bottleneck.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora_init.h"
#include "peft4j/tuners/lora_param.h"
#include "peft4j/tuners/lora_replication.h"
#include "peft4j/tuners/lora_variant.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/tuners/trainable_token_indices.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

namespace {

torch::nn::Linear make_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class LoraTuner : public WrappingTuner<LoraLayer> {
 public:
  LoraTuner() : WrappingTuner({"LORA", lora_config_defaults("LORA"), kLinear | kConv1D | kEmbedding, {{"init_lora_weights", true}}}) {}

  // DoRA's magnitude is a module holding "weight" in memory but is saved without ".weight", as PEFT does.
  std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const override {
    std::string key = remove_adapter_name(model_key, adapter);
    const std::string dora = "lora_magnitude_vector.weight";
    if (key.size() >= dora.size() && key.compare(key.size() - dora.size(), dora.size(), dora) == 0)
      key.resize(key.size() - std::string(".weight").size());
    return key;
  }

  void add_weighted_adapter(PeftModel& model, const WeightedCombination& request) const override;

  // PiSSA, OLoRA, CorDA and LoRA-GA leave the residual W − s·B·A in the base layer (lora_init.h).
  bool changes_base_weights(const nlohmann::json& config) const override { return init_mutates_base(config); }

  // CorDA, EVA and LoRA-GA run the base model over the data before the layers are built (lora_init.h).
  nlohmann::json prepare_from_data(const nlohmann::json& config, models::Model& model,
                                   const std::vector<models::ModelInputs>& data,
                                   std::map<std::string, at::Tensor>& prepared) const override {
    return prepare_lora_init(config, model, data, prepared, [this](const torch::nn::Module& m) { return can_wrap(m); });
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_lora_init(config);
    refuse_unsupported_lora_options(config);
    config_positive_int(config, "r");
    config_probability(config, "lora_dropout");
    config_double(config, "lora_alpha");
    config_bool(config, "use_rslora");
    config_choice(config, "bias", {"none", "all", "lora_only"});
    // PEFT's LoraConfig.__post_init__ on lora_bias.
    if (config_bool(config, "lora_bias") && config_bool(config, "use_dora"))
      fail(ErrorKind::InvalidArgument, "LORA config field 'lora_bias' true is not supported for DoRA (use_dora), as "
                                       "PEFT refuses it");
    if (config_bool(config, "lora_bias") && !config["init_lora_weights"].is_boolean())
      fail(ErrorKind::InvalidArgument, "LORA config field 'lora_bias' true needs init_lora_weights true or false, got " +
                                           config["init_lora_weights"].dump());
    check_pattern(config, "rank_pattern", /*positive_ints=*/true);
    check_pattern(config, "alpha_pattern", /*positive_ints=*/false);
    check_lora_variants(config);
    check_target_parameters(config);
    check_layer_replication(config);
    check_trainable_token_indices(config);
    config_bool(config, "ensure_weight_tying");
  }

  void add(LoraLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, pattern_int(ctx.config, "rank_pattern", ctx.key, "r"),
              pattern_double(ctx.config, "alpha_pattern", ctx.key, "lora_alpha"), ctx.config, ctx.initialise, ctx.key,
              ctx.shared);
  }

 public:
  void prepare_model(const nlohmann::json& config, models::Model& model, bool has_adapters) const override {
    apply_layer_replication(config, model, has_adapters);
  }

  std::string merge_refusal(const nlohmann::json& config) const override {
    return layer_replication_merge_refusal(config);
  }

  bool targets_beyond_modules(const nlohmann::json& config) const override {
    return lora_field_is_set(config["target_parameters"]);
  }

  // target_parameters are wrapped here, before the target modules, which they may not share (checked).
  void prepare(torch::nn::Module&, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    if (!lora_field_is_set(ctx.config["target_parameters"])) return;
    if (!inject_lora_parameters(model, ctx, targets).empty()) return;
    if (targets.empty())
      fail(ErrorKind::InvalidArgument, "no module matches target_modules " + ctx.config["target_modules"].dump() +
                                           " and no parameter matches target_parameters " +
                                           ctx.config["target_parameters"].dump() + "; check these fields");
    warn("target_parameters=" + ctx.config["target_parameters"].dump() + " were set but no parameter was matched.");
  }

  // ensure_weight_tying (PEFT's tied_adapter): the tied Linear's lora_A / lora_B become the embedding's
  // lora_embedding_B / lora_embedding_A transposed: the same storage, but tensors of their own (PEFT wraps the views
  // in new Parameters), each with its gradient. PEFT ties before initialising, so what the default or Gaussian init of
  // the tied layer draws lands in the embedding's factors.
  void tie_to_input_embedding(AdapterLayer& tied, AdapterLayer& embedding, const InjectContext& ctx) const override {
    auto& layer = dynamic_cast<LoraLayer&>(tied);
    auto* source = dynamic_cast<LoraLayer*>(&embedding);
    if (!source || !source->is_embedding() || layer.is_embedding())
      fail(ErrorKind::Unsupported, "ensure_weight_tying ties a Linear ('" + ctx.key + "') to the LoRA adapter of the "
                                   "input Embedding; peft4j found other module kinds");
    if (config_bool(ctx.config, "use_dora") || requested_lora_variant(ctx.config))
      fail(ErrorKind::Unsupported, "ensure_weight_tying with the embedding in target_modules is supported for plain "
                                   "LoRA, not with DoRA or a LoRA variant");
    const auto& init = ctx.config["init_lora_weights"];
    const bool drawn = init == true || init == "gaussian";
    if (!init.is_boolean() && !drawn)
      fail(ErrorKind::Unsupported, "ensure_weight_tying with init_lora_weights " + init.dump() + " is not supported: "
                                   "the tied module '" + ctx.key + "' would initialise the embedding's adapter from "
                                   "its own weight");
    at::Tensor a = layer.lora_a(ctx.adapter), b = layer.lora_b(ctx.adapter);
    at::Tensor embedding_a = source->lora_a(ctx.adapter), embedding_b = source->lora_b(ctx.adapter);
    if (a.sizes() != embedding_b.t().sizes() || b.sizes() != embedding_a.t().sizes())
      fail(ErrorKind::InvalidArgument, "ensure_weight_tying: the LoRA factors of '" + ctx.key + "' (lora_A " +
                                           c10::str(a.sizes()) + ", lora_B " + c10::str(b.sizes()) +
                                           ") cannot be the input embedding's transposed (lora_embedding_B " +
                                           c10::str(embedding_b.sizes()) + "): give both the same rank");
    at::NoGradGuard no_grad;
    if (ctx.initialise && drawn) {
      embedding_b.copy_(a.t());
      embedding_a.copy_(b.t());
    }
    a.set_data(embedding_b.detach().t());
    b.set_data(embedding_a.detach().t());
  }

  void before_forward(const std::string& adapter, const nlohmann::json& config, const models::ModelInputs& inputs,
                      const at::Tensor& rows, AdapterState& state) const override {
    if (const LoraVariantSpec* spec = requested_lora_variant(config); spec && spec->before_forward)
      spec->before_forward(adapter, config, inputs, rows, state);
  }

  void check_with_existing(const nlohmann::json& config,
                           const std::map<std::string, nlohmann::json>& existing) const override {
    for (const auto& spec : lora_variants())
      if (spec.check_with_existing) spec.check_with_existing(config, existing);
    // PEFT's _check_new_adapter_config: the nesting of parameter wrappers (hence the keys) must be the same for all.
    if (!lora_field_is_set(config["target_parameters"])) return;
    auto names = [](const nlohmann::json& c) {
      std::set<std::string> out;
      for (const auto& n : c["target_parameters"]) out.insert(n.get<std::string>());
      return out;
    };
    for (const auto& [name, other] : existing)
      if (lora_field_is_set(other["target_parameters"]) && names(other) != names(config))
        fail(ErrorKind::InvalidArgument, "When using multiple adapters with `target_parameters`, all adapters must "
                                         "target the same set of parameters, but got " +
                                             config["target_parameters"].dump() + " for the new adapter and " +
                                             other["target_parameters"].dump() + " for adapter '" + name + "'");
  }

 private:
  // PEFT's ParamWrapper refuses what cannot act on a parameter: dropout (x cannot be factored out), fan_in_fan_out,
  // lora_bias and every LoRA variant.
  static void check_target_parameters(const nlohmann::json& config) {
    const auto& names = config["target_parameters"];
    if (names.is_null()) return;
    if (!names.is_array() || !std::all_of(names.begin(), names.end(), [](const nlohmann::json& n) { return n.is_string(); }))
      fail(ErrorKind::InvalidArgument, "LORA config field 'target_parameters' must be a list of strings or null, got " +
                                           names.dump());
    if (names.empty()) return;
    auto refuse = [](const std::string& what) {
      fail(ErrorKind::InvalidArgument, "LORA config field 'target_parameters': lora.ParamWrapper does not work with " + what);
    };
    if (config_double(config, "lora_dropout") != 0) refuse("lora_dropout != 0");
    if (config_bool(config, "fan_in_fan_out")) refuse("fan_in_fan_out");
    if (config_bool(config, "lora_bias")) refuse("lora_bias=True");
    if (config_bool(config, "use_dora") || requested_lora_variant(config)) refuse("LoRA variants like DoRA");
    const auto& init = config["init_lora_weights"];
    if (!init.is_boolean() && init != "gaussian")
      fail(ErrorKind::Unsupported, "LORA config field 'init_lora_weights' = " + init.dump() + " together with "
                                   "target_parameters is not supported by peft4j (true, false or \"gaussian\")");
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<LoraTuner>());

// PEFT's LoraModel.add_weighted_adapter: combination_type "linear" (weighted sum of A and B, equal ranks), "cat"
// (ranks concatenated: the exact weighted sum of the updates) or "svd" (the weighted sum of ΔW truncated to a rank).
void LoraTuner::add_weighted_adapter(PeftModel& model, const WeightedCombination& request) const {
  std::vector<int64_t> ranks;
  for (const auto& n : request.adapters) {
    const nlohmann::json& config = model.adapter_config(n);
    int64_t r = config_int(config, "r");
    for (auto it = config["rank_pattern"].begin(); it != config["rank_pattern"].end(); ++it)
      r = std::max<int64_t>(r, it.value().get<int64_t>());
    ranks.push_back(r);
  }
  std::string type = request.adapters.size() == 1 ? "linear" : request.combination_type;
  int64_t new_rank;
  if (type == "linear") {
    if (std::set<int64_t>(ranks.begin(), ranks.end()).size() != 1)
      fail(ErrorKind::InvalidArgument, "combination_type linear needs adapters of the same rank");
    new_rank = ranks[0];
  } else if (type == "cat") {
    new_rank = 0;
    for (auto r : ranks) new_rank += r;
  } else if (type == "svd") {
    new_rank = request.svd_rank > 0 ? request.svd_rank : *std::max_element(ranks.begin(), ranks.end());
  } else {
    fail(ErrorKind::Unsupported, "combination_type '" + request.combination_type + "' is not supported (linear, cat, svd)");
  }
  // The new adapter targets the union of the inputs' targets, with scaling 1 (lora_alpha = r) as PEFT sets it.
  nlohmann::json config = model.adapter_config(request.adapters[0]);
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& n : request.adapters) {
    const auto& t = model.adapter_config(n)["target_modules"];
    if (!t.is_array()) fail(ErrorKind::Unsupported, "add_weighted_adapter needs target_modules lists");
    for (const auto& m : t)
      if (std::find(targets.begin(), targets.end(), m) == targets.end()) targets.push_back(m);
  }
  config["r"] = new_rank;
  config["lora_alpha"] = new_rank;
  config["target_modules"] = targets;
  config["rank_pattern"] = nlohmann::json::object();
  config["alpha_pattern"] = nlohmann::json::object();
  config["use_dora"] = false;
  config["modules_to_save"] = nullptr;
  const std::vector<std::string> active = model.active_adapters();
  model.add_adapter(request.name, config);
  model.set_active_adapters(active);
  at::NoGradGuard no_grad;
  for (const auto& [path, base_layer] : model.adapter_layers()) {
    auto* layer = dynamic_cast<LoraLayer*>(base_layer);
    if (!layer || !layer->has_adapter(request.name)) continue;
    at::Tensor target_a = layer->lora_a(request.name);
    at::Tensor target_b = layer->lora_b(request.name);
    target_a.zero_();
    target_b.zero_();
    std::vector<std::string> present;
    std::vector<double> w;
    for (size_t i = 0; i < request.adapters.size(); ++i)
      if (layer->has_adapter(request.adapters[i])) {
        present.push_back(request.adapters[i]);
        w.push_back(request.weights[i]);
      }
    if (present.empty()) continue;
    if (type == "cat") {
      std::vector<at::Tensor> as, bs;
      for (size_t i = 0; i < present.size(); ++i) {
        as.push_back(layer->lora_a(present[i]) * (w[i] * layer->scaling(present[i])));
        bs.push_back(layer->lora_b(present[i]));
      }
      at::Tensor a = at::cat(as, 0);
      at::Tensor b = at::cat(bs, 1);
      target_a.slice(0, 0, a.size(0)).copy_(a);
      target_b.slice(1, 0, b.size(1)).copy_(b);
    } else if (type == "linear") {
      at::Tensor a = at::zeros_like(target_a);
      at::Tensor b = at::zeros_like(target_b);
      for (size_t i = 0; i < present.size(); ++i) {
        double ws = w[i] * layer->scaling(present[i]);
        double sign = ws >= 0 ? 1.0 : -1.0;
        a += layer->lora_a(present[i]) * (std::sqrt(std::abs(ws)) * sign);
        b += layer->lora_b(present[i]) * std::sqrt(std::abs(ws));
      }
      target_a.copy_(a);
      target_b.copy_(b);
    } else {
      // svd: the weighted sum of the deltas (each already scaled), truncated to new_rank singular triplets.
      at::Tensor delta;
      for (size_t i = 0; i < present.size(); ++i) {
        at::Tensor d = layer->delta_weight(present[i]) * w[i];
        delta = delta.defined() ? delta + d : d;
      }
      // delta_weight is in the base weight layout; the SVD factors B [out, r] @ A [r, in].
      bool transposed = layer->is_embedding() || dynamic_cast<models::Conv1DImpl*>(layer->base_layer().get());
      if (transposed) delta = delta.t();
      auto [u, s, vh] = at::linalg_svd(delta, true);
      u = at::matmul(u.slice(1, 0, new_rank), at::diag(s.slice(0, 0, new_rank)));
      vh = vh.slice(0, 0, new_rank);
      target_a.copy_(vh);
      target_b.copy_(u);
    }
  }
}

}  // namespace

nlohmann::json lora_config_defaults(const std::string& peft_type) {
  return {{"peft_type", peft_type}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
          {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 8}, {"target_modules", nullptr},
          {"exclude_modules", nullptr}, {"lora_alpha", 8}, {"lora_dropout", 0.0}, {"fan_in_fan_out", false},
          {"bias", "none"}, {"use_rslora", false}, {"modules_to_save", nullptr}, {"init_lora_weights", true},
          {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"rank_pattern", nlohmann::json::object()},
          {"alpha_pattern", nlohmann::json::object()}, {"megatron_config", nullptr}, {"megatron_core", "megatron.core"},
          {"trainable_token_indices", nullptr}, {"loftq_config", nlohmann::json::object()}, {"eva_config", nullptr},
          {"corda_config", nullptr}, {"use_dora", false}, {"use_qalora", false}, {"qalora_group_size", 16},
          {"layer_replication", nullptr}, {"lora_bias", false}, {"target_parameters", nullptr},
          {"alora_invocation_tokens", nullptr}, {"arrow_config", nullptr}, {"ensure_weight_tying", false},
          {"kasa_config", nullptr}, {"lora_ga_config", nullptr}, {"monteclora_config", nullptr}, {"use_bdlora", nullptr},
          {"velora_config", nullptr}};
}

void refuse_unsupported_lora_options(const nlohmann::json& config) {
  // Unset: null, false, {} or [] (Python's falsiness, as PEFT tests these options).
  auto is_set = [](const nlohmann::json& v) {
    return !(v.is_null() || (v.is_object() && v.empty()) || (v.is_array() && v.empty()) ||
             (v.is_boolean() && !v.get<bool>()));
  };
  const bool lora = config_string(config, "peft_type") == "LORA";
  // LoRA implements these (its variants, lora_param, lora_replication, lora_init's sub-configs, ...); AdaLoRA, whose
  // config extends LoRA's, none of them.
  std::set<std::string> lora_options = {"target_parameters", "layer_replication", "trainable_token_indices",
                                        "ensure_weight_tying"};
  lora_options.insert(lora_init_fields().begin(), lora_init_fields().end());
  for (const char* field : {"megatron_config", "trainable_token_indices", "eva_config", "corda_config",
                            "layer_replication", "target_parameters", "alora_invocation_tokens", "arrow_config",
                            "kasa_config", "lora_ga_config", "monteclora_config", "velora_config", "use_bdlora",
                            "use_qalora", "ensure_weight_tying", "loftq_config"}) {
    bool variant = lora_options.count(field) > 0;
    for (const auto& spec : lora_variants()) variant = variant || spec.field == field;
    if (lora && variant) continue;
    if (is_set(config[field]))
      fail(ErrorKind::Unsupported, config_string(config, "peft_type") + " config field '" + field +
                                       "' is not supported by peft4j (value " + config[field].dump() + ")");
  }
}

LoraLayer::LoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  if (auto shape = linear_shape(*base)) {
    in_features_ = shape->in_features;
    out_features_ = shape->out_features;
    fan_in_fan_out_ = shape->fan_in_fan_out;
  } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(base.get())) {
    embedding_ = true;
    in_features_ = emb->weight.size(0);
    out_features_ = emb->weight.size(1);
  } else {
    fail(ErrorKind::Unsupported, "LoRA wraps Linear, Conv1D and Embedding modules only");
  }
}

void LoraLayer::add_gate(const std::string& adapter) {
  if (embedding_ || lora_magnitude_vector_->contains(adapter))
    fail(ErrorKind::Unsupported, "a gated LoRA adapter wraps a Linear or Conv1D without DoRA");
  auto gate = make_linear(in_features_, 1, true);
  {
    at::NoGradGuard no_grad;
    gate->weight.normal_(0.0, 0.02);
  }
  gate->to(base_weight().device(), base_weight().scalar_type());
  gates_->put_module(adapter, gate.ptr());
}

bool LoraLayer::has_adapter(const std::string& adapter) const { return r_.count(adapter) > 0; }

at::Tensor LoraLayer::weight_out_in() const {
  at::Tensor w = base_weight();
  return fan_in_fan_out_ ? w.t() : w;
}

at::Tensor LoraLayer::lora_a(const std::string& adapter) const {
  return embedding_ ? lora_embedding_A_->parameter(adapter)
                    : lora_A_->module(adapter).named_parameters(false)["weight"];
}

at::Tensor LoraLayer::lora_b(const std::string& adapter) const {
  return embedding_ ? lora_embedding_B_->parameter(adapter)
                    : lora_B_->module(adapter).named_parameters(false)["weight"];
}

void LoraLayer::add(const std::string& adapter, int64_t r, double alpha, const nlohmann::json& config, bool initialise,
                    const std::string& key, const std::map<std::string, at::Tensor>& prepared) {
  if (r <= 0) fail(ErrorKind::InvalidArgument, "LoRA rank must be positive, got " + std::to_string(r));
  const bool dora = config_bool(config, "use_dora");
  const bool lora_bias = config_bool(config, "lora_bias");
  if (dora && embedding_) fail(ErrorKind::Unsupported, "DoRA on an Embedding layer is not supported by peft4j");
  const LoraVariantSpec* variant = requested_lora_variant(config);
  if (variant && embedding_ && !variant->on_embedding)
    fail(ErrorKind::Unsupported, "LORA config field '" + variant->field + "' asks for a LoRA variant that PEFT 0.21 has "
                                 "no Embedding layer for (target '" + key + "' is an Embedding)");
  // PEFT's lora.Embedding refuses lora_bias; on a Linear without a bias it only warns (merging then fails).
  if (lora_bias && embedding_)
    fail(ErrorKind::InvalidArgument, "LORA config field 'lora_bias' true is not supported for Embedding layers (target '" +
                                         key + "')");
  if (lora_bias && !linear_bias(*base_layer()).defined())
    warn("lora_bias=True was passed but the targeted layer '" + key + "' has no bias: merging the adapter won't be "
         "possible");
  at::NoGradGuard no_grad;
  auto options = at::TensorOptions().dtype(base_weight().scalar_type()).device(base_weight().device());
  const auto& init = config["init_lora_weights"];
  const bool default_init = init_is_default(config, key, prepared);
  const bool gaussian = init.is_string() && init.get<std::string>() == "gaussian";
  if (embedding_) {
    // PEFT draws both from randn, then zeros A and redraws B from N(0, 1) when initialising: for every truthy
    // init_lora_weights except MiCA, the one Embedding init of its own.
    at::Tensor a = at::randn({r, in_features_}, options);
    at::Tensor b = at::randn({out_features_, r}, options);
    if (initialise && (default_init || (init.is_string() && init.get<std::string>() != "mica"))) {
      a.zero_();
      b.normal_();
    }
    lora_embedding_A_->put_parameter(adapter, a);
    lora_embedding_B_->put_parameter(adapter, b);
  } else {
    auto a = make_linear(in_features_, r, false);
    auto b = make_linear(r, out_features_, lora_bias);
    a->to(options.device(), options.dtype().toScalarType());
    b->to(options.device(), options.dtype().toScalarType());
    if (initialise && default_init) {
      // kaiming_uniform_(a=sqrt(5)) as nn.Linear's own init: U(-1/sqrt(in), 1/sqrt(in))
      double bound = 1.0 / std::sqrt(static_cast<double>(in_features_));
      a->weight.uniform_(-bound, bound);
      b->weight.zero_();
      if (lora_bias) b->bias.zero_();
    } else if (initialise && gaussian) {
      a->weight.normal_(0.0, 1.0 / static_cast<double>(r));
      b->weight.zero_();
      if (lora_bias) b->bias.zero_();
    }
    lora_A_->put_module(adapter, a.ptr());
    lora_B_->put_module(adapter, b.ptr());
  }
  r_[adapter] = r;
  if (lora_bias) lora_bias_.insert(adapter);
  scaling_[adapter] = config_bool(config, "use_rslora") ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
  dropout_[adapter] = config_double(config, "lora_dropout");
  // PiSSA, OLoRA, MiCA, orthogonal, CorDA, LoRA-GA, EVA (lora_init.h); before DoRA's magnitude, which PEFT takes from
  // the weight these leave.
  if (initialise) initialise_lora_layer(*this, adapter, config, key, prepared);
  if (dora) {
    // The magnitude starts as the row norms of the adapted weight, so an adapter starts where LoRA would.
    auto magnitude = std::make_shared<torch::nn::Module>();
    at::Tensor lora_weight = at::matmul(lora_b(adapter), lora_a(adapter));
    magnitude->register_parameter("weight", dora_weight_norm(lora_weight, scaling_[adapter]).clone());
    lora_magnitude_vector_->put_module(adapter, magnitude);
  }
  if (variant) variants_[adapter] = variant->make(*this, adapter, config, key, initialise);
}

void LoraLayer::replace_lora_A(const std::string& adapter, std::shared_ptr<torch::nn::Module> module) {
  lora_A_->put_module(adapter, std::move(module));
}

void LoraLayer::replace_lora_B(const std::string& adapter, std::shared_ptr<torch::nn::Module> module) {
  lora_B_->put_module(adapter, std::move(module));
}

AdapterDict& LoraLayer::variant_dict(const std::string& name) {
  auto children = named_children();
  if (const auto* child = children.find(name)) {
    auto* dict = dynamic_cast<AdapterDict*>(child->get());
    if (!dict) fail(ErrorKind::Internal, "LoRA layer child '" + name + "' is not an adapter dict");
    return *dict;
  }
  return *register_module(name, std::make_shared<AdapterDict>());
}

const AdapterDict& LoraLayer::variant_dict(const std::string& name) const {
  auto children = named_children();
  const auto* child = children.find(name);
  const auto* dict = child ? dynamic_cast<const AdapterDict*>(child->get()) : nullptr;
  if (!dict) fail(ErrorKind::Internal, "LoRA layer has no adapter dict '" + name + "'");
  return *dict;
}

const LoraVariant* LoraLayer::variant(const std::string& adapter) const {
  auto it = variants_.find(adapter);
  return it == variants_.end() ? nullptr : it->second.get();
}

at::Tensor LoraLayer::dropped(const std::string& adapter, const at::Tensor& x) const {
  const double p = dropout_.at(adapter);
  return p > 0 ? at::dropout(x, p, is_training()) : x;
}

bool LoraLayer::can_merge() const { return gates_->children().empty() && merge_refusal().empty(); }

// The first refusal among the active adapters' variants; "" when they all merge (gated adapters are refused by
// can_merge itself).
std::string LoraLayer::merge_refusal() const {
  for (const auto& adapter : state_->active)
    if (const LoraVariant* v = variant(adapter); v && !v->merge_refusal().empty()) return v->merge_refusal();
  if (!gates_->children().empty()) return WeightDeltaLayer::merge_refusal();
  return "";
}

bool LoraLayer::routes_mixed_batches() const { return mixed_batch_refusal().empty(); }

std::string LoraLayer::mixed_batch_refusal() const {
  if (!state_->row_adapters) return "";
  for (const auto& adapter : *state_->row_adapters)
    if (const LoraVariant* v = variant(adapter); v && !v->mixed_batch_refusal().empty()) return v->mixed_batch_refusal();
  return "";
}

at::Tensor LoraLayer::dora_weight_norm(const at::Tensor& lora_weight, double scale) const {
  at::Tensor weight = weight_out_in().to(lora_weight.scalar_type()) + scale * lora_weight;
  return weight.norm(2, {1}).to(weight.scalar_type());
}

at::Tensor LoraLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  if (auto it = variants_.find(adapter); it != variants_.end())
    return it->second->forward(*this, adapter, x.to(lora_a(adapter).scalar_type()), result);
  const double scale = scaling_.at(adapter);
  if (embedding_) {
    at::Tensor after_a = at::embedding(lora_embedding_A_->parameter(adapter).t(), x);
    return result + at::matmul(after_a, lora_embedding_B_->parameter(adapter).t()) * scale;
  }
  auto& a = lora_A_->module(adapter);
  auto& b = lora_B_->module(adapter);
  const double p = dropout_.at(adapter);
  at::Tensor input = x.to(lora_a(adapter).scalar_type());
  if (!lora_magnitude_vector_->contains(adapter)) {
    at::Tensor dropped = p > 0 ? at::dropout(input, p, is_training()) : input;
    at::Tensor update = models::forward_module(b, models::forward_module(a, dropped));
    if (gates_->contains(adapter)) return result + update * sequence_gate(input, gates_->module(adapter)).unsqueeze(1);
    return result + update * scale;
  }
  // DoRA (PEFT's DoraLinearVariant): rescale the adapted weight's rows to the learned magnitude; the norm is
  // treated as a constant (detached), as the paper's section 4.3 prescribes.
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor lora_weight = at::matmul(lora_b(adapter), lora_a(adapter)).to(input.scalar_type());
  at::Tensor weight = weight_out_in().to(input.scalar_type());
  at::Tensor weight_norm = (weight + scale * lora_weight.detach()).norm(2, {1}).detach();
  at::Tensor mag_norm_scale = (magnitude / weight_norm).view({1, -1});
  at::Tensor base_result;
  if (p == 0 || !is_training()) {
    base_result = result;
    auto params = base_layer()->named_parameters(false);
    if (const auto* bias = params.find("bias"); bias && bias->defined()) base_result = base_result - *bias;
  } else {
    input = at::dropout(input, p, true);
    base_result = at::linear(input, weight);
  }
  at::Tensor lora_result = models::forward_module(b, models::forward_module(a, input));
  return result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scale;
}

at::Tensor LoraLayer::delta_weight(const std::string& adapter) const {
  if (const LoraVariant* v = variant(adapter)) return v->delta_weight(*this, adapter);
  return plain_delta_weight(adapter);
}

at::Tensor LoraLayer::plain_delta_weight(const std::string& adapter) const {
  at::Tensor a = lora_a(adapter);
  at::Tensor b = lora_b(adapter);
  // Low-precision matmuls are slow on CPUs: compute in f32 there, as PEFT does.
  bool upcast = a.device().is_cpu() && (a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16);
  at::Tensor ba = upcast ? at::matmul(b.to(at::kFloat), a.to(at::kFloat)) : at::matmul(b, a);
  at::Tensor delta = ((embedding_ || fan_in_fan_out_) ? ba.t() : ba) * scaling_.at(adapter);
  return delta.to(a.scalar_type());
}

// lora_bias: B's bias, scaled, joins the base bias (PEFT's Linear.merge).
void LoraLayer::merge_lora_bias(const std::string& adapter, double sign) {
  if (embedding_ || !lora_B_->contains(adapter)) return;
  auto params = lora_B_->module(adapter).named_parameters(false);
  const auto* b = params.find("bias");
  if (!b || !b->defined()) return;
  at::Tensor base_bias = linear_bias(*base_layer());
  if (!base_bias.defined())
    fail(ErrorKind::Unsupported, "impossible to merge LoRA adapter '" + adapter + "' with lora_bias=True: the base layer "
                                 "has no bias");
  at::NoGradGuard no_grad;
  base_bias.add_((*b * scaling_.at(adapter)).to(base_bias.scalar_type()), sign);
}

void LoraLayer::merge_adapter(const std::string& adapter) {
  if (const LoraVariant* v = variant(adapter); v && !v->merge_refusal().empty())
    fail(ErrorKind::Unsupported, v->merge_refusal());
  if (!lora_magnitude_vector_->contains(adapter)) {
    if (lora_bias_.count(adapter) && !linear_bias(*base_layer()).defined())
      fail(ErrorKind::Unsupported, "impossible to merge LoRA adapter '" + adapter + "' with lora_bias=True: the base "
                                   "layer has no bias");
    WeightDeltaLayer::merge_adapter(adapter);
    merge_lora_bias(adapter, 1.0);
    return;
  }
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  at::Tensor delta = delta_weight(adapter).to(w.scalar_type());
  at::Tensor delta_out_in = fan_in_fan_out_ ? delta.t() : delta;
  at::Tensor norm = (weight_out_in() + delta_out_in).norm(2, {1}).detach();
  merged_weight_norm_[adapter] = norm;
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor factor = (magnitude / norm).view({-1, 1});
  if (fan_in_fan_out_) factor = factor.t();
  w.copy_(factor * (w + delta));
}

void LoraLayer::unmerge_adapter(const std::string& adapter) {
  if (!lora_magnitude_vector_->contains(adapter)) {
    WeightDeltaLayer::unmerge_adapter(adapter);
    merge_lora_bias(adapter, -1.0);
    return;
  }
  at::NoGradGuard no_grad;
  at::Tensor w = base_weight();
  at::Tensor delta = delta_weight(adapter).to(w.scalar_type());
  at::Tensor magnitude = lora_magnitude_vector_->module(adapter).named_parameters(false)["weight"];
  at::Tensor factor = (magnitude / merged_weight_norm_.at(adapter)).view({-1, 1});
  if (fan_in_fan_out_) factor = factor.t();
  w.copy_(w / factor - delta);
  merged_weight_norm_.erase(adapter);
}

void LoraLayer::forget_adapter(const std::string& adapter) {
  variants_.erase(adapter);
  lora_bias_.erase(adapter);
  r_.erase(adapter);
  scaling_.erase(adapter);
  dropout_.erase(adapter);
  merged_weight_norm_.erase(adapter);
}

}  // namespace peft4j::tuners
