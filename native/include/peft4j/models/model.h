// The interface every base model family implements. Models are torch::nn::Modules whose registered
// parameter/buffer names reproduce HF's state-dict keys exactly (e.g. "model.layers.0.self_attn.q_proj.weight"),
// so a checkpoint loads name for name and PEFT's adapter keys map onto our modules directly.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft4j/error.h"

namespace peft4j::models {

// Keys and values of one attention layer, [batch, kv_heads, length, head_dim].
// Used both for generation's KV cache and for prompt-learning prefixes (past key values).
struct LayerKV {
  at::Tensor key;
  at::Tensor value;
  bool defined() const { return key.defined(); }
};

// Per-layer past key/values. For encoder-decoder models `self_attn` is the decoder self-attention and
// `cross_attn` the cross-attention (empty for decoder-only models); `encoder_self_attn` holds prefixes for
// the encoder's self-attention (prompt learning on T5/BERT); generation never fills it.
struct PastKeyValues {
  std::vector<LayerKV> self_attn;
  std::vector<LayerKV> cross_attn;
  std::vector<LayerKV> encoder_self_attn;
  bool empty() const { return self_attn.empty() && cross_attn.empty() && encoder_self_attn.empty(); }
  // Length already cached in the (decoder) self-attention, 0 when empty.
  int64_t length() const { return self_attn.empty() || !self_attn[0].defined() ? 0 : self_attn[0].key.size(2); }
};

// What a tuner may hook into one attention layer, to act inside attention where no wrapped module reaches: UniPELT
// gates its prefixes by the attention input, the multi-head parallel adapter adds a term to every head's output.
// Each family's attention module derives from this and calls adapt_past() on the past keys/values it is given and
// add_heads_terms() on its merged heads before the output projection. Hooks are keyed by adapter name; each decides
// itself whether its adapter is active (returning the past unchanged, or an undefined term).
class AttentionHooks {
 public:
  // Rewrites this layer's past keys/values (prefixes) from the attention input [B, T, hidden].
  using PastHook = std::function<LayerKV(const LayerKV& past, const at::Tensor& input)>;
  // A term [B, T, heads * head_dim] added to the merged heads before the output projection, from the attention
  // input; an undefined result adds nothing.
  using HeadsHook = std::function<at::Tensor(const at::Tensor& input)>;

  // `self_attention` false for cross-attention; `takes_prefix` when prefix tuning's past keys/values reach this
  // layer (every self-attention, except T5's encoder, where PEFT puts none).
  AttentionHooks(int64_t heads, int64_t head_dim, bool self_attention, bool takes_prefix)
      : heads_(heads), head_dim_(head_dim), self_attention_(self_attention), takes_prefix_(takes_prefix) {}
  virtual ~AttentionHooks() = default;

  void set_past_hook(const std::string& adapter, PastHook hook);    // nullptr removes the adapter's hook
  void set_heads_hook(const std::string& adapter, HeadsHook hook);  // nullptr removes the adapter's hook
  int64_t heads() const { return heads_; }          // query heads
  int64_t head_dim() const { return head_dim_; }
  bool is_self_attention() const { return self_attention_; }
  bool takes_prefix() const { return takes_prefix_; }

  // Called by the family's forward: the past after every hook, and the merged heads plus every hook's term.
  LayerKV adapt_past(const LayerKV& past, const at::Tensor& input) const;
  at::Tensor add_heads_terms(const at::Tensor& heads, const at::Tensor& input) const;

 private:
  int64_t heads_, head_dim_;
  bool self_attention_, takes_prefix_;
  std::map<std::string, PastHook> past_hooks_;
  std::map<std::string, HeadsHook> heads_hooks_;
};

struct ModelInputs {
  at::Tensor input_ids;             // [B, T] int64; undefined when inputs_embeds is given
  at::Tensor inputs_embeds;         // [B, T, H]
  at::Tensor attention_mask;        // [B, past + T] 1 = attend, 0 = padding; undefined = all ones
  at::Tensor position_ids;          // [B, T]; undefined = derived as transformers does
  at::Tensor token_type_ids;        // BERT
  at::Tensor decoder_input_ids;     // T5; undefined with labels = labels shifted right
  at::Tensor decoder_inputs_embeds; // T5
  at::Tensor decoder_attention_mask;
  at::Tensor labels;                // causal: = input_ids (shifted inside), seq-cls: class ids, seq2seq: targets
  at::Tensor encoder_hidden_states; // T5 decoding with a precomputed encoder output
  std::optional<PastKeyValues> past_key_values;  // prefixes or the generation cache
  bool use_cache = false;           // return the updated cache in ModelOutput::past_key_values
};

struct ModelOutput {
  at::Tensor logits;
  at::Tensor loss;                  // defined when labels were given
  at::Tensor encoder_hidden_states; // T5
  std::optional<PastKeyValues> past_key_values;
};

enum class Task { CausalLM, SequenceClassification, Seq2SeqLM };

class Model : public torch::nn::Module {
 public:
  virtual ~Model() = default;
  virtual ModelOutput forward(const ModelInputs& inputs) = 0;
  virtual Task task() const = 0;
  virtual const nlohmann::json& config() const = 0;
  virtual std::string model_type() const = 0;
  // Embedding of token ids ("model.embed_tokens", "transformer.wte", ...): prompt learning builds
  // inputs_embeds with it.
  virtual torch::nn::Module& input_embeddings() = 0;
  virtual at::Tensor embed(const at::Tensor& input_ids) = 0;
  virtual int64_t num_layers() const = 0;
  virtual int64_t num_kv_heads() const = 0;
  virtual int64_t head_dim() const = 0;
  virtual int64_t hidden_size() const = 0;
  virtual int64_t vocab_size() const = 0;
  // Checkpoint keys that may be absent or present without error because HF ties or recomputes them
  // (a tied lm_head.weight, rotary inv_freq buffers, T5's encoder/decoder embed_tokens copies of "shared").
  virtual bool is_optional_key(const std::string& key) const { return false; }
  // transformers' base_model_prefix ("transformer" for GPT-2): a checkpoint of the bare base model (GPT2Model) has
  // keys without it, which load_weights prefixes, as from_pretrained does. Empty: keys are taken as they are.
  virtual std::string base_model_prefix() const { return ""; }
  // Called after a load with the optional keys the checkpoint lacked, so a model can tie them as transformers
  // does when a tied weight is absent from the file.
  virtual void on_absent_optional_keys(const std::vector<std::string>& keys) {}
  // Whether forward() may be asked for a KV cache (use_cache): false while an adapter computes something from the
  // whole sequence at once (UniPELT's gates), so generate() recomputes the sequence each step instead.
  virtual bool supports_kv_cache() const { return true; }
  // PEFT's replicate_layers (LoRA's layer_replication, layer_replication.h): the layer stack rebuilt from `map`,
  // repeated layers sharing their weights; num_layers() and config()'s num_hidden_layers follow. Families without
  // one layer list (GPT-2's "h" sits under "transformer", T5 has two) refuse it, as PEFT does.
  virtual void replicate_layers(const std::vector<std::pair<int64_t, int64_t>>& map) {
    fail(ErrorKind::Unsupported, "layer_replication: could not locate the layers of " + model_type() +
                                     " (PEFT replicates Llama-, Bert- and Falcon-like layer lists)");
  }
};

// The model's self-attention layers in module order, with their module paths ("model.layers.0.self_attn").
struct SelfAttentionLayer {
  std::string path;
  torch::nn::Module* module;
  AttentionHooks* hooks;
};
std::vector<SelfAttentionLayer> self_attention_layers(Model& model);

// A module whose forward maps one tensor to one tensor (a projection, an embedding, a norm, the LM head).
// Tuners swap a model's child for a wrapper with torch::nn::Module::replace_module(name, wrapper), as PEFT
// replaces "q_proj" with a LoRA layer; the wrapper implements this interface. Models therefore look such a
// child up by its registered name at every call (forward_child), so the replacement takes effect.
class TensorModule {
 public:
  virtual ~TensorModule() = default;
  virtual at::Tensor forward(const at::Tensor& input) = 0;
};

// Calls a TensorModule, or one of torch's Linear, Embedding and LayerNorm.
inline at::Tensor forward_module(torch::nn::Module& module, const at::Tensor& input) {
  if (auto* m = dynamic_cast<TensorModule*>(&module)) return m->forward(input);
  if (auto* m = dynamic_cast<torch::nn::LinearImpl*>(&module)) return m->forward(input);
  if (auto* m = dynamic_cast<torch::nn::EmbeddingImpl*>(&module)) return m->forward(input);
  if (auto* m = dynamic_cast<torch::nn::LayerNormImpl*>(&module)) return m->forward(input);
  fail(ErrorKind::Internal, "module " + module.name() + " has no one-tensor forward");
}

// Calls the child registered under `name` in `parent` now, whatever a tuner replaced it with.
inline at::Tensor forward_child(const torch::nn::Module& parent, const std::string& name, const at::Tensor& input) {
  auto children = parent.named_children();
  const std::shared_ptr<torch::nn::Module>* child = children.find(name);
  if (!child) fail(ErrorKind::NotFound, "module " + parent.name() + " has no child '" + name + "'");
  return forward_module(**child, input);
}

// The causal attention mask of transformers' create_causal_mask / create_sliding_window_causal_mask as a boolean
// tensor [B or 1, 1, T, P + T] (true = attend). Query t sits at key index P + t and attends to key j when
// j <= P + t, attention_mask[b, j] != 0 (when given: [B, P + T], covering the past too) and, with a window W,
// j > P + t - W. Indices are positions in the key sequence, padding included, as in transformers.
inline at::Tensor causal_attention_mask(int64_t batch, int64_t query_length, int64_t past_length,
                                        const at::Tensor& attention_mask, std::optional<int64_t> sliding_window,
                                        const at::Device& device) {
  const int64_t key_length = past_length + query_length;
  auto index_options = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor query_index = at::arange(query_length, index_options).unsqueeze(1) + past_length;
  at::Tensor key_index = at::arange(key_length, index_options).unsqueeze(0);
  at::Tensor allowed = key_index.le(query_index);
  if (sliding_window) allowed = allowed.logical_and(key_index.gt(query_index - *sliding_window));
  allowed = allowed.view({1, 1, query_length, key_length});
  if (!attention_mask.defined()) return allowed;
  if (attention_mask.dim() != 2 || attention_mask.size(0) != batch || attention_mask.size(1) != key_length)
    fail(ErrorKind::InvalidArgument,
         "attention_mask must have shape [" + std::to_string(batch) + ", " + std::to_string(key_length) +
             "] (batch, past length " + std::to_string(past_length) + " + input length " +
             std::to_string(query_length) + "), got " + c10::str(attention_mask.sizes()));
  return allowed.logical_and(attention_mask.to(device).ne(0).view({batch, 1, 1, key_length}));
}

// HF's tie_word_embeddings: an nn.Linear without bias whose "weight" is the given tensor itself (same
// TensorImpl), so the one parameter appears under both names, as in HF's module tree, and stays shared through
// loading and dtype/device changes. Callers dedupe parameters by identity where counts matter.
class TiedLinearImpl : public torch::nn::LinearImpl {
 public:
  explicit TiedLinearImpl(const at::Tensor& weight)
      : torch::nn::LinearImpl(torch::nn::LinearOptions(1, 1).bias(false)) {
    // Constructed 1x1 so that no full-size weight is allocated and initialised only to be dropped.
    options.in_features(weight.size(1)).out_features(weight.size(0));
    this->weight = weight;
    parameters_["weight"] = weight;
  }
};

using ModelFactory = std::function<std::shared_ptr<Model>(const nlohmann::json& config)>;

// Registers a family under its config.json model_type ("llama", "qwen2", ...). Each family's .cpp calls
// this from a static initialiser, so adding a family touches only its own file pair.
bool register_model_type(const std::string& model_type, ModelFactory factory);
std::vector<std::string> registered_model_types();

// Builds the model described by an HF config.json, parameters uninitialised (zero), on CPU in f32.
// Unknown model_type -> Error(Unsupported) naming it.
std::shared_ptr<Model> create_model(const nlohmann::json& config);

// Copies `tensors` into the model's parameters and buffers name for name, converting dtype to the
// model's. Missing keys, unexpected keys and shape mismatches are all collected and reported in one
// Error(Format) naming each; on error the model is left unchanged. `source` names the origin in messages.
// Keys that HF ties or recomputes (tied lm_head, rotary inv_freq, T5's shared/embed copies) are accepted
// when absent or present, as transformers does. A checkpoint none of whose keys starts with the model's
// base_model_prefix() has it added to every key (the bare base model's checkpoint), as transformers does.
void load_weights(Model& model, const std::map<std::string, at::Tensor>& tensors, const std::string& source);

// Reads an HF model directory (config.json + model.safetensors or a sharded index) into a model.
std::shared_ptr<Model> load_model(const std::string& dir);

}  // namespace peft4j::models
