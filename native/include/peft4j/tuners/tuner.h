// The tuner architecture shared by every PEFT method, as in HF PEFT: a config (PEFT's adapter_config.json,
// same field names), a layer that wraps a target module, and the model-level injection (PeftModel) that finds
// targets and replaces them. A registry maps peft_type to its Tuner.
//
// In the unified view (He et al., ICLR 2022) a method computes a modification of one hidden state. For layer
// methods that hidden state is the output of the wrapped module: AdapterLayer::apply() turns the running result
// into the adapted one (parallel: result + Δh; rescaling or gating: f(result)), so the shared forward handles
// active adapters, disabling, merging and mixed batches for every method.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "peft4j/error.h"
#include "peft4j/models/model.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

// What every adapter layer of one PeftModel reads at forward time.
struct AdapterState {
  std::vector<std::string> active;                        // adapters that act, in order
  bool disabled = false;                                  // PEFT's disable_adapter(): the base model alone
  const std::vector<std::string>* row_adapters = nullptr;  // mixed batch: one adapter name (or "__base__") per row
  // aLoRA (lora_alora.cpp), set by Tuner::before_forward per adapter for the batch rows routed to it: how many
  // trailing tokens of this forward's input it acts on ([rows] long; absent: none), and what carries over a KV cache
  // (the rows whose invocation a forward over the cache found, and the cache length after it).
  struct ALoraRows {
    at::Tensor offsets;
    at::Tensor invoked;
    int64_t cache_length = 0;
  };
  std::map<std::string, ALoraRows> alora;
};

// PEFT's nn.ModuleDict / nn.ParameterDict keyed by adapter name, so that keys read
// "q_proj.lora_A.default.weight" (a module per adapter) or "embed_tokens.lora_embedding_A.default" (a tensor).
class AdapterDict : public torch::nn::Module {
 public:
  void put_module(const std::string& adapter, std::shared_ptr<torch::nn::Module> module);
  void put_parameter(const std::string& adapter, const at::Tensor& value);
  // A frozen tensor saved with the adapter (PEFT's BufferDict), e.g. VeRA's shared projections. `persistent` false
  // keeps it out of saved adapters and of the tensors a load expects (PEFT's BufferDict(persistent=False), used by
  // VeRA/RandLoRA with save_projection=false, which regenerate the tensor from a seed instead).
  void put_buffer(const std::string& adapter, const at::Tensor& value, bool persistent = true);
  bool is_persistent(const std::string& adapter) const { return transient_.count(adapter) == 0; }
  // Keeps a module entry's parameters out of training while they are still saved (PEFT's frozen PEFT weights, e.g.
  // MiCA's lora_B).
  void freeze(const std::string& adapter) { frozen_.insert(adapter); }
  bool contains(const std::string& adapter) const;
  void remove(const std::string& adapter);
  torch::nn::Module& module(const std::string& adapter) const;
  at::Tensor parameter(const std::string& adapter) const;  // a parameter or a frozen tensor
  bool is_frozen(const std::string& adapter) const { return frozen_.count(adapter) > 0; }
  // Parameters of one adapter: its module's parameters or its tensor.
  std::vector<at::Tensor> adapter_parameters(const std::string& adapter) const;

 private:
  std::set<std::string> frozen_;
  std::set<std::string> transient_;  // frozen entries that are not saved
};

// PEFT's BaseTunerLayer: wraps the target module, registered as "base_layer", and adds adapters beside it.
class AdapterLayer : public torch::nn::Module, public models::TensorModule {
 public:
  // `base_name` is the wrapped module's child name: "base_layer" for tuner layers, "original_module" for
  // modules_to_save, as in PEFT's state dicts.
  AdapterLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
               std::string base_name = "base_layer");

  virtual std::string peft_type() const = 0;
  virtual bool has_adapter(const std::string& adapter) const = 0;
  // result -> adapted result for one adapter; x is the layer input.
  virtual at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) = 0;

  // Merging folds an adapter into the base weight. Methods that cannot merge keep these defaults, which
  // raise Error(Unsupported) naming the method.
  virtual bool can_merge() const { return false; }
  // What a refused merge says (Error(Unsupported)): the method's reason.
  virtual std::string merge_refusal() const { return peft_type() + " adapters cannot be merged into the base weights"; }
  // Virtual for methods that merge under rules of their own (LN tuning: one adapter at a time).
  virtual void merge(const std::vector<std::string>& adapters);
  void unmerge();
  const std::vector<std::string>& merged_adapters() const { return merged_; }

  // Removes an adapter: its entries in every AdapterDict child plus the method's own bookkeeping.
  void delete_adapter(const std::string& adapter);

  // Whether the adapter's tensors on this layer go into saved files (false where they are another layer's, saved there).
  virtual bool saves_adapter(const std::string& adapter) const { return true; }

  // Whether any adapter is left (a layer without adapters is unwrapped).
  bool empty() const;

  // Whether a mixed batch (one adapter per row) is routed here. PEFT 0.21 routes adapter_names for LoRA-style layers
  // only and drops the argument elsewhere; rather than give other numbers than PEFT, or the same numbers while
  // ignoring the request, a layer that does not route refuses a mixed batch (Error(Unsupported) naming the method).
  virtual bool routes_mixed_batches() const { return true; }
  virtual std::string mixed_batch_refusal() const {
    return peft_type() + " adapters do not support mixed batches (one adapter per row): PEFT 0.21 routes them for "
                         "LoRA only; run one forward per adapter instead";
  }

  // The module the layer wraps, its child name, and its forward.
  std::shared_ptr<torch::nn::Module> base_layer() const;
  const std::string& base_name() const { return base_name_; }
  at::Tensor base_forward(const at::Tensor& x) const;

  at::Tensor forward(const at::Tensor& x) override;

 protected:
  // Registers the per-adapter dict `name` (PEFT's lora_A, vera_lambda_b, ...) on this layer, in PEFT's order.
  std::shared_ptr<AdapterDict> adapter_dict(const std::string& name);
  virtual void merge_adapter(const std::string& adapter);
  virtual void unmerge_adapter(const std::string& adapter);
  virtual void forget_adapter(const std::string& adapter) {}
  // Active adapters acting on x, base output first; mixed batches route rows to their adapter.
  virtual at::Tensor adapted_forward(const at::Tensor& x);
  at::Tensor mixed_forward(const at::Tensor& x, const std::vector<std::string>& row_adapters);

  std::shared_ptr<AdapterState> state_;
  std::vector<std::string> merged_;

 private:
  std::string base_name_;
};

// How a method's layers are built and initialised for one adapter.
struct InjectContext {
  std::string adapter;             // adapter name
  nlohmann::json config;           // normalised config (PEFT's fields, defaults filled)
  std::string key;                 // module path relative to the base model, e.g. "model.layers.0.self_attn.q_proj"
  std::shared_ptr<AdapterState> state;
  bool initialise = true;          // false when weights will be loaded right after (values are then irrelevant)
  // Model-level tensors of this adapter that Tuner::prepare() made (VeRA's shared projections, VB-LoRA's vector
  // bank), by name, for the layers to use.
  std::map<std::string, at::Tensor> shared;
  // The batches PeftModel::add_adapter was given (PaFi scores the base model's parameters on them); null when none.
  const std::vector<models::ModelInputs>* data = nullptr;
};

using NamedLayers = std::vector<std::pair<std::string, AdapterLayer*>>;

class PeftModel;

// PEFT's add_weighted_adapter request: a new adapter `name` combined from existing ones.
struct WeightedCombination {
  std::vector<std::string> adapters;
  std::vector<double> weights;
  std::string name;
  std::string combination_type;
  int64_t svd_rank = 0;  // 0: the largest rank among the inputs
};

class Tuner {
 public:
  virtual ~Tuner() = default;
  virtual std::string peft_type() const = 0;
  // PEFT's config with PEFT's defaults filled for absent fields; unknown fields are kept; a value peft4j cannot
  // honour is rejected by field name (Error(Unsupported) or Error(InvalidArgument)).
  virtual nlohmann::json normalize_config(const nlohmann::json& config) const = 0;
  // Whether `module` can be wrapped by this method (type check after name matching).
  virtual bool can_wrap(const torch::nn::Module& module) const = 0;
  // Adds the adapter to `target`: wraps it in a new layer, or extends it when it already is this method's
  // layer. Returns the module that now sits at the target's place.
  virtual std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                                    const InjectContext& context) const = 0;
  // ensure_weight_tying: makes `layer` (a module tied to the input embedding, already given the adapter) share the
  // adapter of `embedding` (PEFT's tied_adapter). Methods without it refuse (Error(Unsupported)).
  virtual void tie_to_input_embedding(AdapterLayer& layer, AdapterLayer& embedding, const InjectContext& context) const {
    fail(ErrorKind::Unsupported, peft_type() + " adapters cannot be tied to the input embedding's (ensure_weight_tying)");
  }
  // PEFT's checkpoint key for a model key (the adapter name removed); methods with renamed keys override.
  virtual std::string checkpoint_key(const std::string& model_key, const std::string& adapter) const;
  // Rejects configs that cannot apply to the model, before any module is touched.
  virtual void check_model(const nlohmann::json& config, models::Model& model) const {}
  // Before the layers are built: a method with state shared by all its layers registers it on `tuner_module`
  // (PEFT's BaseTuner, "base_model") as AdapterDict children keyed by adapter, so it is saved as
  // "base_model.<name>" like PEFT's, and hands the tensors to the layers through context.shared.
  virtual void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
                       InjectContext& context) const {}
  // Called when the adapter is added with data, before the layers are built: a data-driven initialisation (LoRA's
  // CorDA, EVA, LoRA-GA) runs the base model over `data`, returns the config the layers are built with (EVA
  // redistributes ranks) and fills `prepared` with per-module tensors they initialise from (InjectContext::shared); a
  // method reading the data later (PaFi's prepare, through InjectContext::data) returns the config as it is. The
  // default refuses data (Unsupported naming the method).
  virtual nlohmann::json prepare_from_data(const nlohmann::json& config, models::Model& model,
                                           const std::vector<models::ModelInputs>& data,
                                           std::map<std::string, at::Tensor>& prepared) const;
  // Whether adding an adapter with `config` changes the wrapped weights themselves (LoRA's PiSSA, OLoRA, CorDA and
  // LoRA-GA leave a residual): PeftModel then copies them first, to put them back when the adapter cannot be added
  // or loaded.
  virtual bool changes_base_weights(const nlohmann::json& config) const { return false; }
  // A term added to the training loss (AdaLoRA's orthogonal regulariser); undefined for none.
  virtual at::Tensor training_loss_term(const NamedLayers& layers, const std::string& adapter,
                                        const nlohmann::json& config) const {
    return at::Tensor();
  }
  // Whether training_loss_term joins every loss the model computes (eval mode and disabled adapters included),
  // as AdaLoRA's forward adds its regulariser whenever labels are given, rather than only losses in training.
  virtual bool loss_term_always() const { return false; }
  // `config` changed so that a new adapter starts as the identity (LoRA: init_lora_weights true, B = 0), or
  // nullopt when the method has no identity initialisation. The shared contract test relies on it.
  virtual std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const { return std::nullopt; }
  // Called after each optimizer step of training (AdaLoRA's rank allocation); `step` counts from 1.
  virtual void after_optimizer_step(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                                    int64_t step) const {}
  // Called once before a training run of `max_steps` optimizer steps (PST's sparsity schedule and diff pruning's
  // fixmask phase are fractions of it).
  virtual void before_training(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                               int64_t max_steps) const {}
  // The learning rate of one of the adapter's trainable tensors (by its parameter name) where the method trains it at
  // a rate of its own (diff pruning's gates), before the trainer's schedule scales it; nullopt: the trainer's rate.
  virtual std::optional<double> learning_rate(const std::string& parameter, const nlohmann::json& config) const {
    return std::nullopt;
  }
  // What PEFT derives from the model when the adapter is added (TRAINABLE_TOKENS: target_modules defaults to
  // the input embedding), applied after normalize_config; the result is the adapter's config and what it saves.
  virtual nlohmann::json resolve_for_model(const nlohmann::json& config, models::Model& model) const { return config; }
  // PEFT's per-method file format on top of the structural keys. `tensors` (checkpoint key -> tensor, as the
  // structural rule collects them) becomes what PEFT's file holds (AdaLoRA drops pruned ranks, VB-LoRA may keep
  // only the top-k logits); the default keeps them.
  virtual void to_checkpoint(std::map<std::string, at::Tensor>& tensors, const nlohmann::json& config) const {}
  // The inverse, applied to a file's tensors before they are matched to the model's keys.
  virtual void from_checkpoint(std::map<std::string, at::Tensor>& tensors, const nlohmann::json& config) const {}
  // The same two steps for methods whose saved form is computed from their layers rather than renamed (a sparse
  // difference instead of the tensors that make it, merged parameters instead of an adapter): `tensors` becomes the
  // file's content before to_checkpoint; and before a file's tensors are matched, the layers take the shapes the file
  // holds (a sparse support's size). Both default to nothing.
  virtual void layers_to_checkpoint(const NamedLayers& layers, const std::string& adapter, const nlohmann::json& config,
                                    std::map<std::string, at::Tensor>& tensors) const {}
  virtual void layers_from_checkpoint(const NamedLayers& layers, const std::string& adapter,
                                      const nlohmann::json& config,
                                      const std::map<std::string, at::Tensor>& tensors) const {}
  // Whether the adapter's output for a token depends only on the tokens so far, so that a KV cache can extend a
  // forward token by token. False for gates averaged over the whole sequence (UniPELT, gated bottleneck adapters).
  virtual bool supports_kv_cache(const nlohmann::json& config) const { return true; }
  // PEFT's add_weighted_adapter for this method's adapters (all of request.adapters are this method's); the default
  // raises Error(Unsupported) naming the method.
  virtual void add_weighted_adapter(PeftModel& model, const WeightedCombination& request) const;
  // Before each forward of the model in which adapter `adapter` acts on the batch rows `rows` (indices, ascending;
  // every row when undefined): what its layers need to know about the inputs goes into `state` (aLoRA's offsets).
  virtual void before_forward(const std::string& adapter, const nlohmann::json& config,
                              const models::ModelInputs& inputs, const at::Tensor& rows, AdapterState& state) const {}
  // PEFT's _prepare_model: changes the base model before targets are matched (LoRA's layer_replication).
  // `has_adapters`: whether the model already carries adapters.
  virtual void prepare_model(const nlohmann::json& config, models::Model& model, bool has_adapters) const {}
  // Why adapter `config` cannot be merged into the base weights whatever its layers (LoRA with replicated layers,
  // whose copies share their weights); empty when nothing at model level stops it.
  virtual std::string merge_refusal(const nlohmann::json& config) const { return ""; }
  // Whether the config targets more than modules (LoRA's target_parameters), so that an adapter matching no target
  // module is not an error here; prepare() then wraps what else it targets.
  virtual bool targets_beyond_modules(const nlohmann::json& config) const { return false; }
  // Checks that adapter `config` may join a model that already carries `existing` (name -> config) of this method,
  // before anything is touched (KaSA cannot share a model with other adapters).
  virtual void check_with_existing(const nlohmann::json& config,
                                   const std::map<std::string, nlohmann::json>& existing) const {}
};

// The layer of methods whose update is an additive ΔW on the wrapped module's weight (LoRA's family, LyCORIS, VeRA,
// FourierFT, C3A, ...): merging adds ΔW to the weight and unmerging subtracts it.
class WeightDeltaLayer : public AdapterLayer {
 public:
  using AdapterLayer::AdapterLayer;
  bool can_merge() const override { return true; }
  // ΔW in the wrapped weight's stored layout (Linear [out, in], GPT-2's Conv1D [in, out], Embedding [num, dim]), with
  // the adapter's scaling.
  virtual at::Tensor delta_weight(const std::string& adapter) const = 0;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  // The wrapped module's "weight" as stored.
  at::Tensor base_weight() const;
};

// Which modules a wrapping method's layer can wrap (flags, combined with |).
enum ModuleKind : unsigned {
  kLinear = 1,     // torch::nn::Linear
  kConv1D = 2,     // GPT-2's Conv1D
  kEmbedding = 4,  // torch::nn::Embedding
};
bool is_module_kind(const torch::nn::Module& module, unsigned kinds);
// "Linear, GPT-2's Conv1D and Embedding modules", as errors name what a method wraps.
std::string describe_module_kinds(unsigned kinds);

// What a module-wrapping method declares once; WrappingTuner does the rest.
struct MethodSpec {
  std::string peft_type;
  // Every field of PEFT's config class with its default: the one place a default lives (config reads have none).
  nlohmann::json defaults;
  unsigned wraps = kLinear;
  // The fields that make a new adapter start as the identity (e.g. {"init_weights": true}; {} when every new adapter
  // is); null when the method has no identity initialisation.
  nlohmann::json identity = nullptr;
  bool requires_target_modules = true;  // false for methods that derive their targets (resolve_for_model)
  // What errors say the method wraps, for methods that override WrappingTuner::wraps(); empty: from `wraps`.
  std::string wraps_description = "";
};

// The Tuner of a method that wraps target modules with `Layer` (PEFT's BaseTuner._create_and_replace): it fills the
// defaults, checks the targets, creates the layer on a module's first adapter and extends it on later ones, and
// derives the identity config. A method writes its MethodSpec, validate() for its own field rules and add() for how
// one adapter is added to one layer.
template <typename Layer>
class WrappingTuner : public Tuner {
 public:
  explicit WrappingTuner(MethodSpec spec) : spec_(std::move(spec)) {}

  std::string peft_type() const final { return spec_.peft_type; }

  nlohmann::json normalize_config(const nlohmann::json& input) const override {
    nlohmann::json config = with_method_defaults(input);
    validate(config);
    if (spec_.requires_target_modules) require_target_modules(config);
    return config;
  }

  bool can_wrap(const torch::nn::Module& m) const override {
    return dynamic_cast<const Layer*>(&m) || (!dynamic_cast<const AdapterLayer*>(&m) && wraps(m));
  }

  // PEFT raises for a targeted module its method cannot wrap rather than skipping it.
  void check_model(const nlohmann::json& config, models::Model& model) const override {
    require_wrappable_targets(*this, config, model,
                              spec_.wraps_description.empty() ? describe_module_kinds(spec_.wraps) : spec_.wraps_description);
  }

  std::shared_ptr<torch::nn::Module> inject(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const override {
    auto layer = std::dynamic_pointer_cast<Layer>(target);
    if (!layer) layer = make_layer(target, ctx);
    add(*layer, ctx);
    return layer;
  }

  std::optional<nlohmann::json> identity_config(const nlohmann::json& config) const override {
    if (spec_.identity.is_null()) return std::nullopt;
    nlohmann::json identity = config;
    identity.update(spec_.identity);
    return identity;
  }

 protected:
  const MethodSpec& spec() const { return spec_; }
  nlohmann::json with_method_defaults(const nlohmann::json& input) const { return with_defaults(input, spec_.defaults); }
  // Whether a module that is no adapter layer can be wrapped; the default checks spec().wraps.
  virtual bool wraps(const torch::nn::Module& m) const { return is_module_kind(m, spec_.wraps); }
  // The method's own rules on its normalised config (defaults filled), each error naming the field.
  virtual void validate(nlohmann::json& config) const {}
  // A new layer around `target` for the first adapter there; a Layer built from more than (module, state) needs its
  // method to override this.
  virtual std::shared_ptr<Layer> make_layer(const std::shared_ptr<torch::nn::Module>& target,
                                            const InjectContext& ctx) const {
    if constexpr (std::is_constructible_v<Layer, std::shared_ptr<torch::nn::Module>, std::shared_ptr<AdapterState>>)
      return std::make_shared<Layer>(target, ctx.state);
    else
      fail(ErrorKind::Internal, spec_.peft_type + " does not say how its layer is made");
  }
  // Adds ctx.adapter (its normalised config ctx.config, module ctx.key) to `layer`.
  virtual void add(Layer& layer, const InjectContext& ctx) const = 0;

 private:
  MethodSpec spec_;
};

// The AdapterDict `name` on the tuner module (PEFT's BaseTuner attribute, saved as "base_model.<name>"), created on
// first use: model-level state shared by a method's layers (VeRA's projections, VB-LoRA's vector bank).
std::shared_ptr<AdapterDict> model_level_dict(torch::nn::Module& tuner_module, const std::string& name);

// Registry: each method's .cpp registers its Tuner from a static initialiser. A second tuner for a registered
// peft_type is a peft4j bug: Error(Internal) naming it.
bool register_tuner(std::shared_ptr<const Tuner> tuner);
const Tuner& tuner_for(const std::string& peft_type);  // Error(Unsupported) listing the known types
std::vector<std::string> registered_tuners();

// PEFT's _remove_adapter_name_from_state_dict_key.
std::string remove_adapter_name(const std::string& key, const std::string& adapter);

}  // namespace peft4j::tuners
