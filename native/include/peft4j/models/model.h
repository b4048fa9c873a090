// The interface every base model family implements. Models are torch::nn::Modules whose registered
// parameter/buffer names reproduce HF's state-dict keys exactly (e.g. "model.layers.0.self_attn.q_proj.weight"),
// so a checkpoint loads name for name and PEFT's adapter keys map onto our modules directly.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

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
// when absent or present, as transformers does.
void load_weights(Model& model, const std::map<std::string, at::Tensor>& tensors, const std::string& source);

// Reads an HF model directory (config.json + model.safetensors or a sharded index) into a model.
std::shared_ptr<Model> load_model(const std::string& dir);

}  // namespace peft4j::models
