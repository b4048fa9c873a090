// The shared part of the methods HF PEFT lacks that add a small module to a transformer block (bottleneck adapters,
// Compacter, AdapterBias), in the unified view of He et al. (ICLR 2022): a module computes Δh from one hidden state
// z and adds it to the hidden state of a sublayer.
//
//   Sequential   z = the sublayer's output h, h' = h + Δ(h)            (Houlsby, Pfeiffer, AdapterBias)
//   Parallel     z = the sublayer's input x, h' = h + Δ(x)            (He et al.'s parallel adapter)
//   NormInput    BERT's post-LN output LN(s), s = dense(x) + residual: h' = LN(s + Δ(LN(s)))
//                (AdapterHub's original_ln_before = true, residual_before_ln = true, original_ln_after = true)
//
// Where each sits on peft4j's models (a sublayer is a module the block calls by name, so a DeltaLayer wraps it):
//
//                      llama/qwen2/mistral        gpt2              bert (encoder.layer.i.)
//   attention, seq.    self_attn.o_proj           attn.c_proj       attention.output.dense
//   attention, norm    -                          -                 attention.output.LayerNorm
//   FFN, sequential    mlp.down_proj              mlp.c_proj        output.dense
//   FFN, parallel      mlp                        mlp               -
//   FFN, norm          -                          -                 output.LayerNorm
//
// A parallel adapter needs the sublayer input and output around one module, which these models have only for the
// pre-LN FFN (`mlp`); the other cells raise Error(Unsupported) naming the option.
//
// AdapterDrop (Rücklé et al. 2021): `leave_out` lists layers that get no adapter at all; with `adapter_drop` the
// adapters of the lowest n layers are also skipped in training, n drawn uniformly from [0, L) for every batch by
// the first adapter layer the batch reaches.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

enum class Sublayer { Attention, FeedForward };
enum class Insertion { Sequential, Parallel, NormInput };

// The module path (relative to the model) that a delta adapter of layer `layer` wraps; Error(Unsupported) naming
// `method` and the model family where the table above has no cell.
std::string delta_target(models::Model& model, int64_t layer, Sublayer sublayer, Insertion insertion,
                         const std::string& method);

// Δ(z) of one adapter. Subclasses register their tensors as parameters, so they are trained and saved as
// "<module>.adapters.<name>" entries (see delta_checkpoint_key).
class DeltaModule : public torch::nn::Module {
 public:
  virtual at::Tensor delta(const at::Tensor& z) = 0;
  // Whether z -> z + Δ(z) is linear in z, so that a sequential adapter folds into the Linear/Conv1D producing z.
  virtual bool mergeable() const { return false; }
  // Folds z -> z + Δ(z) into `base` (a Linear or Conv1D), or takes it out again when `inverse`.
  virtual void merge_into(torch::nn::Module& base, bool inverse);
};

struct DeltaPlacement {
  Insertion insertion = Insertion::Sequential;
  int64_t layer = 0;
  // AdapterDrop's per-batch draw shared by every layer of one adapter: int64 CPU {L, n}, adapters of layers below n
  // are skipped for the current batch; undefined without random AdapterDrop.
  at::Tensor drop;
  bool draws = false;  // this layer draws the batch's n (the first one a forward reaches)
};

class DeltaLayer : public AdapterLayer {
 public:
  DeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state, std::string peft_type);

  std::string peft_type() const override { return peft_type_; }
  bool has_adapter(const std::string& adapter) const override { return deltas_->contains(adapter); }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  // Only sequential adapters whose Δ is linear (AdapterBias) fold into the wrapped weight: a bottleneck adapter's
  // non-linearity, or a parallel adapter reading another hidden state than the wrapped module's output, cannot.
  bool can_merge() const override;

  void add(const std::string& adapter, std::shared_ptr<DeltaModule> delta, DeltaPlacement placement);
  DeltaModule& delta(const std::string& adapter) const;
  const DeltaPlacement& placement(const std::string& adapter) const { return placements_.at(adapter); }

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override { placements_.erase(adapter); }

 private:
  bool skipped(const std::string& adapter);

  std::string peft_type_;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> deltas_ = adapter_dict("adapters");
  std::map<std::string, DeltaPlacement> placements_;
};

// "<path>.adapters.<adapter>.<param>" -> "<path>.adapters.<param>", AdapterHub's naming without the adapter name.
std::string delta_checkpoint_key(const std::string& model_key, const std::string& adapter);

// The adapter's targets: the layers of the model minus `leave_out`, at the sublayers chosen, as a target_modules
// list of full module paths (so the saved config is explicit and a reload finds the same modules).
nlohmann::json delta_targets(models::Model& model, const std::vector<Sublayer>& sublayers, Insertion insertion,
                             const std::vector<int64_t>& leave_out, const std::string& method);

// The transformer layer index in a module path ("model.layers.3.mlp" -> 3, "decoder.block.2.layer.0.SelfAttention" -> 2).
int64_t layer_of(const std::string& path);

// Linear or GPT-2 Conv1D, or a DeltaLayer (a second adapter on the same module).
bool delta_can_wrap(const torch::nn::Module& module);

// Reads `leave_out` (a list of layer indices within [0, L)).
std::vector<int64_t> leave_out_layers(const nlohmann::json& config, models::Model& model, const std::string& method);

// With `adapter_drop` in the config, puts the adapter's AdapterDrop draw into context.shared (from prepare()).
void prepare_adapter_drop(models::Model& model, InjectContext& context);

// Wraps `target` (or extends the DeltaLayer already there) with `delta` for context.adapter. The first target of
// the config's list draws AdapterDrop's n.
std::shared_ptr<torch::nn::Module> inject_delta(const std::shared_ptr<torch::nn::Module>& target,
                                                const InjectContext& context, const std::string& peft_type,
                                                std::shared_ptr<DeltaModule> delta, Insertion insertion);

// The model's modules as its user names them, in module order: an adapter layer stands for the module it wraps
// (path of the layer, the wrapped module), and adapter internals are skipped. Whole-model tuners (BitFit, layer
// freezing) pick their targets from these, so a second adapter finds the modules the first one wrapped.
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> unwrapped_modules(models::Model& model);

// The output width of the wrapped module (the hidden state Δ is added to).
int64_t delta_width(torch::nn::Module& target);
// The parameters' dtype and device of `module`.
at::TensorOptions module_options(torch::nn::Module& module);

}  // namespace peft4j::tuners
