#include "peft4j/models/t5.h"

#include <algorithm>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/models/bert.h"
#include "peft4j/models/config_fields.h"

namespace peft4j::models {

namespace {

// The most negative finite value of `type`: transformers' masked-out score (torch.finfo(dtype).min).
at::Scalar lowest_value(at::ScalarType type) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "lowest_value",
                                         [] { return at::Scalar(std::numeric_limits<scalar_t>::lowest()); });
}

// HF clamps the residual stream of f16 models to the finite range after each sub-layer (inf -> max - 1000).
at::Tensor clamp_half(const at::Tensor& hidden) {
  if (hidden.scalar_type() != at::kHalf) return hidden;
  const double max = 65504.0;
  at::Tensor bound = at::where(at::isinf(hidden).any(), at::Scalar(max - 1000.0), at::Scalar(max));
  return at::clamp(hidden, -bound, bound);
}

// Bucket of each relative position (memory - query), as Mesh TensorFlow: exact buckets for small distances,
// logarithmic ones up to max_distance; bidirectional buckets keep the sign in the upper half.
at::Tensor relative_position_bucket(at::Tensor relative, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance) {
  at::Tensor buckets = at::zeros_like(relative);
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (relative > 0).to(at::kLong) * num_buckets;
    relative = at::abs(relative);
  } else {
    relative = -at::minimum(relative, at::zeros_like(relative));
  }
  const int64_t max_exact = num_buckets / 2;
  at::Tensor is_small = relative < max_exact;
  at::Tensor if_large =
      max_exact + (at::log(relative.to(at::kFloat) / max_exact) /
                   std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                   (num_buckets - max_exact))
                      .to(at::kLong);
  if_large = at::minimum(if_large, at::full_like(if_large, num_buckets - 1));
  return buckets + at::where(is_small, relative, if_large);
}

// Checks per-layer keys/values [B, heads, length, d_kv] and returns their common length (0 when none).
int64_t past_length(const std::vector<LayerKV>& layers, int64_t num_layers, const std::string& what) {
  if (layers.empty()) return 0;
  if (static_cast<int64_t>(layers.size()) != num_layers)
    fail(ErrorKind::InvalidArgument, "t5 " + what + " has " + std::to_string(layers.size()) +
                                         " layers, the model has " + std::to_string(num_layers));
  int64_t length = -1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerKV& kv = layers[i];
    if (!kv.defined() || !kv.value.defined() || kv.key.dim() != 4 || kv.key.sizes() != kv.value.sizes())
      fail(ErrorKind::InvalidArgument, "t5 " + what + " layer " + std::to_string(i) +
                                           ": key and value must both be [batch, heads, length, d_kv]");
    if (length >= 0 && kv.key.size(2) != length)
      fail(ErrorKind::InvalidArgument, "t5 " + what + ": layer " + std::to_string(i) + " has length " +
                                           std::to_string(kv.key.size(2)) + ", layer 0 has " + std::to_string(length));
    length = kv.key.size(2);
  }
  return length;
}

std::string shape_text(at::IntArrayRef shape) {
  std::ostringstream out;
  out << shape;
  return out.str();
}

// A [B, P + T] "attend" mask from a user mask of [B, T] or [B, P + T]; the P past positions are attended.
at::Tensor keep_mask(const at::Tensor& mask, int64_t batch, int64_t past, int64_t length, at::Device device,
                     const std::string& what) {
  at::Tensor keep = mask.to(device) != 0;
  if (keep.dim() != 2 || keep.size(0) != batch || (keep.size(1) != length && keep.size(1) != past + length))
    fail(ErrorKind::InvalidArgument, "t5 " + what + " must be [" + std::to_string(batch) + ", " +
                                         std::to_string(length) + "] or [" + std::to_string(batch) + ", " +
                                         std::to_string(past + length) + "] (past included), got " +
                                         shape_text(mask.sizes()));
  if (keep.size(1) == length && past > 0) keep = at::cat({at::ones({batch, past}, keep.options()), keep}, 1);
  return keep;
}

}  // namespace

T5Config T5Config::from_json(const nlohmann::json& json) {
  if (!json.is_object()) fail(ErrorKind::Format, "t5 config is not a JSON object");
  T5Config c;
  c.vocab_size = config_value<int64_t>(json, "t5", "vocab_size", c.vocab_size);
  c.d_model = config_value<int64_t>(json, "t5", "d_model", c.d_model);
  c.d_kv = config_value<int64_t>(json, "t5", "d_kv", c.d_kv);
  c.d_ff = config_value<int64_t>(json, "t5", "d_ff", c.d_ff);
  c.num_layers = config_value<int64_t>(json, "t5", "num_layers", c.num_layers);
  c.num_decoder_layers = config_value<int64_t>(json, "t5", "num_decoder_layers", c.num_layers);
  c.num_heads = config_value<int64_t>(json, "t5", "num_heads", c.num_heads);
  c.relative_attention_num_buckets =
      config_value<int64_t>(json, "t5", "relative_attention_num_buckets", c.relative_attention_num_buckets);
  c.relative_attention_max_distance =
      config_value<int64_t>(json, "t5", "relative_attention_max_distance", c.relative_attention_max_distance);
  c.dropout_rate = config_value<double>(json, "t5", "dropout_rate", c.dropout_rate);
  c.layer_norm_epsilon = config_value<double>(json, "t5", "layer_norm_epsilon", c.layer_norm_epsilon);
  c.pad_token_id = config_value<int64_t>(json, "t5", "pad_token_id", c.pad_token_id);
  if (json.contains("decoder_start_token_id") && !json["decoder_start_token_id"].is_null())
    c.decoder_start_token_id = config_value<int64_t>(json, "t5", "decoder_start_token_id", 0);

  std::string proj = config_value<std::string>(json, "t5", "feed_forward_proj", "relu");
  auto dash = proj.find('-');
  bool valid = dash == std::string::npos ||
               (proj.substr(0, dash) == "gated" && proj.find('-', dash + 1) == std::string::npos);
  if (!valid)
    fail(ErrorKind::Format, "t5 config field 'feed_forward_proj' is '" + proj +
                                "', expected 'ACT' or 'gated-ACT' (e.g. 'relu', 'gated-gelu')");
  c.is_gated_act = dash != std::string::npos;
  c.dense_act_fn = c.is_gated_act ? proj.substr(dash + 1) : proj;
  if (proj == "gated-gelu") c.dense_act_fn = "gelu_new";  // HF's backwards compatibility
  // Saved configs carry the derived fields too; transformers lets them win.
  c.dense_act_fn = config_value<std::string>(json, "t5", "dense_act_fn", c.dense_act_fn);
  c.is_gated_act = config_value<bool>(json, "t5", "is_gated_act", c.is_gated_act);

  bool tie = config_value<bool>(json, "t5", "tie_word_embeddings", true);
  c.scale_decoder_outputs = config_value<bool>(json, "t5", "scale_decoder_outputs", tie);
  c.tie_lm_head = tie && c.scale_decoder_outputs;

  for (auto [value, key] : {std::pair{c.vocab_size, "vocab_size"}, {c.d_model, "d_model"}, {c.d_kv, "d_kv"},
                            {c.d_ff, "d_ff"}, {c.num_layers, "num_layers"},
                            {c.num_decoder_layers, "num_decoder_layers"}, {c.num_heads, "num_heads"},
                            {c.relative_attention_num_buckets, "relative_attention_num_buckets"},
                            {c.relative_attention_max_distance, "relative_attention_max_distance"}})
    if (value <= 0)
      fail(ErrorKind::Format, std::string("t5 config field '") + key + "' must be positive, got " +
                                  std::to_string(value));
  if (c.relative_attention_num_buckets < 4)
    fail(ErrorKind::Format, "t5 config field 'relative_attention_num_buckets' must be at least 4");
  return c;
}

// T5's RMS norm: no mean subtraction, no bias, the variance accumulated in f32. Cloneable so that a tuner can copy
// it (LN tuning trains a copy per adapter).
class T5LayerNormImpl : public torch::nn::Cloneable<T5LayerNormImpl>, public TensorModule {
 public:
  T5LayerNormImpl(int64_t size, double eps) : size_(size), eps_(eps) { reset(); }
  void reset() override { weight = register_parameter("weight", at::ones({size_})); }

  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
    at::Tensor normed = x * at::rsqrt(variance + eps_);
    if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16)
      normed = normed.to(weight.scalar_type());
    return weight * normed;
  }

  at::Tensor weight;

 private:
  int64_t size_;
  double eps_;
};

// SelfAttention / EncDecAttention: q, k, v, o without bias, no 1/sqrt(d) scaling; layer 0's self-attention also
// owns the relative_attention_bias embedding shared by the whole stack.
class T5AttentionImpl : public torch::nn::Module, public AttentionHooks {
 public:
  // Prefix tuning feeds the decoder's self-attention only (bidirectional: the encoder's).
  T5AttentionImpl(const T5Config& c, bool self_attention, bool has_relative_bias, bool bidirectional)
      : AttentionHooks(c.num_heads, c.d_kv, self_attention, self_attention && !bidirectional),
        heads_(c.num_heads), d_kv_(c.d_kv), buckets_(c.relative_attention_num_buckets),
        max_distance_(c.relative_attention_max_distance), bidirectional_(bidirectional), dropout_(c.dropout_rate) {
    const int64_t inner = c.num_heads * c.d_kv;
    for (const char* name : {"q", "k", "v"})
      register_module(name, torch::nn::Linear(torch::nn::LinearOptions(c.d_model, inner).bias(false)));
    register_module("o", torch::nn::Linear(torch::nn::LinearOptions(inner, c.d_model).bias(false)));
    if (has_relative_bias)
      register_module("relative_attention_bias",
                      torch::nn::Embedding(c.relative_attention_num_buckets, c.num_heads));
  }

  // [B, S, heads * d_kv] -> [B, heads, S, d_kv]
  at::Tensor split_heads(const at::Tensor& x) const {
    return x.view({x.size(0), x.size(1), heads_, d_kv_}).transpose(1, 2);
  }

  LayerKV project_kv(const at::Tensor& source) {
    return {split_heads(forward_child(*this, "k", source)), split_heads(forward_child(*this, "v", source))};
  }

  // Attention of the `normed` queries over `kv`; `bias` is the additive position bias with the mask folded in.
  at::Tensor attend(const at::Tensor& normed, const LayerKV& kv, const at::Tensor& bias) {
    at::Tensor query = split_heads(forward_child(*this, "q", normed));
    at::Tensor key = kv.key.to(query.scalar_type()), value = kv.value.to(query.scalar_type());
    at::Tensor out;
    if (is_training() && dropout_ > 0.0) {
      // compat's SDPA has no dropout; training composes the same computation with dropout on the weights.
      at::Tensor scores = at::matmul(query, key.transpose(-2, -1));
      if (bias.defined()) scores = scores + bias;
      at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(query.scalar_type());
      out = at::matmul(at::dropout(probs, dropout_, /*train=*/true), value);
    } else {
      out = compat::scaled_dot_product_attention(query, key, value, bias, /*scale=*/1.0);
    }
    return forward_child(
        *this, "o", add_heads_terms(out.transpose(1, 2).reshape({normed.size(0), normed.size(1), heads_ * d_kv_}), normed));
  }

  // [1, heads, query_length, key_length]: queries at positions past .. past + query_length - 1, keys from 0.
  at::Tensor compute_bias(int64_t query_length, int64_t key_length, int64_t past, at::Device device) {
    at::TensorOptions options = at::TensorOptions(at::kLong).device(device);
    at::Tensor context = at::arange(query_length, options).unsqueeze(1) + past;
    at::Tensor memory = at::arange(key_length, options).unsqueeze(0);
    at::Tensor bucket = relative_position_bucket(memory - context, bidirectional_, buckets_, max_distance_);
    return forward_child(*this, "relative_attention_bias", bucket).permute({2, 0, 1}).unsqueeze(0);
  }

 private:
  int64_t heads_, d_kv_, buckets_, max_distance_;
  bool bidirectional_;
  double dropout_;
};

// layer.N.{SelfAttention|EncDecAttention} + layer_norm (pre-norm, residual).
class T5AttentionLayerImpl : public torch::nn::Module {
 public:
  T5AttentionLayerImpl(const T5Config& c, const std::string& name, bool has_relative_bias, bool bidirectional)
      : dropout(c.dropout_rate) {
    attention = register_module(
        name, std::make_shared<T5AttentionImpl>(c, name == "SelfAttention", has_relative_bias, bidirectional));
    register_module("layer_norm", std::make_shared<T5LayerNormImpl>(c.d_model, c.layer_norm_epsilon));
  }

  at::Tensor norm(const at::Tensor& hidden) { return forward_child(*this, "layer_norm", hidden); }

  std::shared_ptr<T5AttentionImpl> attention;
  double dropout;
};

// layer.N.DenseReluDense: wi -> act -> wo, or act(wi_0) * wi_1 -> wo when gated.
class T5DenseImpl : public torch::nn::Module {
 public:
  explicit T5DenseImpl(const T5Config& c)
      : gated_(c.is_gated_act), act_(activation_by_name(c.dense_act_fn, "t5 dense_act_fn")), dropout_(c.dropout_rate) {
    auto linear = [](int64_t in, int64_t out) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
    };
    if (gated_) {
      register_module("wi_0", linear(c.d_model, c.d_ff));
      register_module("wi_1", linear(c.d_model, c.d_ff));
    } else {
      register_module("wi", linear(c.d_model, c.d_ff));
    }
    wo_ = register_module("wo", linear(c.d_ff, c.d_model));
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = gated_ ? act_(forward_child(*this, "wi_0", x)) * forward_child(*this, "wi_1", x)
                          : act_(forward_child(*this, "wi", x));
    h = at::dropout(h, dropout_, is_training());
    // wo may be kept in f32 in a half-precision model (HF's _keep_in_fp32_modules); feed it its own dtype.
    return forward_child(*this, "wo", h.to(wo_->weight.scalar_type()));
  }

 private:
  bool gated_;
  torch::nn::Linear wo_{nullptr};
  Activation act_;
  double dropout_;
};

class T5FeedForwardLayerImpl : public torch::nn::Module {
 public:
  explicit T5FeedForwardLayerImpl(const T5Config& c) : dropout_(c.dropout_rate) {
    dense = register_module("DenseReluDense", std::make_shared<T5DenseImpl>(c));
    register_module("layer_norm", std::make_shared<T5LayerNormImpl>(c.d_model, c.layer_norm_epsilon));
  }

  at::Tensor forward(const at::Tensor& hidden) {
    return hidden +
           at::dropout(dense->forward(forward_child(*this, "layer_norm", hidden)), dropout_, is_training());
  }

  std::shared_ptr<T5DenseImpl> dense;

 private:
  double dropout_;
};

// block.N: layer.0 self-attention, layer.1 cross-attention (decoder only), then the feed-forward layer.
class T5BlockImpl : public torch::nn::Module {
 public:
  T5BlockImpl(const T5Config& c, bool is_decoder, bool has_relative_bias) {
    auto layers = register_module("layer", torch::nn::ModuleList());
    self_attention = std::make_shared<T5AttentionLayerImpl>(c, "SelfAttention", has_relative_bias, !is_decoder);
    layers->push_back(self_attention);
    if (is_decoder) {
      cross_attention = std::make_shared<T5AttentionLayerImpl>(c, "EncDecAttention", false, false);
      layers->push_back(cross_attention);
    }
    feed_forward = std::make_shared<T5FeedForwardLayerImpl>(c);
    layers->push_back(feed_forward);
  }

  struct Output {
    at::Tensor hidden;
    LayerKV self_kv;   // past + current keys/values of the self-attention
    LayerKV cross_kv;  // keys/values the cross-attention used
  };

  // `past` precedes the current keys/values; `cross_past`, when defined, replaces the projection of `encoder`.
  Output forward(at::Tensor hidden, const at::Tensor& self_bias, const LayerKV* past, const at::Tensor& encoder,
                 const at::Tensor& cross_bias, const LayerKV* cross_past) {
    Output out;
    at::Tensor normed = self_attention->norm(hidden);
    out.self_kv = self_attention->attention->project_kv(normed);
    if (past && past->defined()) {
      const LayerKV kv = self_attention->attention->adapt_past(*past, normed);
      out.self_kv = {at::cat({kv.key.to(out.self_kv.key.scalar_type()), out.self_kv.key}, 2),
                     at::cat({kv.value.to(out.self_kv.value.scalar_type()), out.self_kv.value}, 2)};
    }
    at::Tensor attended = self_attention->attention->attend(normed, out.self_kv, self_bias);
    hidden = clamp_half(hidden + at::dropout(attended, self_attention->dropout, is_training()));

    if (cross_attention) {
      normed = cross_attention->norm(hidden);
      out.cross_kv = cross_past && cross_past->defined() ? *cross_past
                                                         : cross_attention->attention->project_kv(encoder);
      attended = cross_attention->attention->attend(normed, out.cross_kv, cross_bias);
      hidden = clamp_half(hidden + at::dropout(attended, cross_attention->dropout, is_training()));
    }
    out.hidden = clamp_half(feed_forward->forward(hidden));
    return out;
  }

  std::shared_ptr<T5AttentionLayerImpl> self_attention;
  std::shared_ptr<T5AttentionLayerImpl> cross_attention;  // null in the encoder
  std::shared_ptr<T5FeedForwardLayerImpl> feed_forward;
};

// encoder / decoder: embed_tokens (tied to "shared"), blocks, final_layer_norm.
class T5StackImpl : public torch::nn::Module {
 public:
  T5StackImpl(const T5Config& c, bool is_decoder, const at::Tensor& shared_weight)
      : is_decoder_(is_decoder), dropout_(c.dropout_rate) {
    register_module("embed_tokens",
                    torch::nn::Embedding(torch::nn::EmbeddingOptions(c.vocab_size, c.d_model)._weight(shared_weight)));
    auto block_list = register_module("block", torch::nn::ModuleList());
    const int64_t count = is_decoder ? c.num_decoder_layers : c.num_layers;
    for (int64_t i = 0; i < count; ++i) {
      blocks.push_back(std::make_shared<T5BlockImpl>(c, is_decoder, /*has_relative_bias=*/i == 0));
      block_list->push_back(blocks.back());
    }
    register_module("final_layer_norm", std::make_shared<T5LayerNormImpl>(c.d_model, c.layer_norm_epsilon));
  }

  // Relative position bias of the self-attention for `length` queries after `past` positions, with the mask
  // folded in: `keep` [B, past + length] (undefined = all attended), causal in the decoder.
  at::Tensor self_bias(int64_t length, int64_t past, const at::Tensor& keep, at::ScalarType dtype, at::Device device) {
    at::Tensor bias =
        blocks[0]->self_attention->attention->compute_bias(length, past + length, past, device).to(dtype);
    at::Tensor allowed;  // broadcastable to [B, 1, length, past + length]
    if (is_decoder_) {
      at::TensorOptions options = at::TensorOptions(at::kLong).device(bias.device());
      allowed = (at::arange(past + length, options).unsqueeze(0) <= at::arange(length, options).unsqueeze(1) + past)
                    .view({1, 1, length, past + length});
    }
    if (keep.defined()) {
      at::Tensor padding = keep.view({keep.size(0), 1, 1, keep.size(1)});
      allowed = allowed.defined() ? allowed.logical_and(padding) : padding;
    }
    return allowed.defined() ? bias.masked_fill(allowed.logical_not(), lowest_value(dtype)) : bias;
  }

  struct Output {
    at::Tensor hidden;
    std::vector<LayerKV> self_kv, cross_kv;
  };

  Output forward(const at::Tensor& embeds, const at::Tensor& self_bias, const std::vector<LayerKV>* past,
                 const at::Tensor& encoder, const at::Tensor& cross_bias, const std::vector<LayerKV>* cross_past,
                 bool keep_cache) {
    Output out;
    at::Tensor hidden = at::dropout(embeds, dropout_, is_training());
    for (size_t i = 0; i < blocks.size(); ++i) {
      auto block = blocks[i]->forward(hidden, self_bias, past ? &(*past)[i] : nullptr, encoder, cross_bias,
                                      cross_past ? &(*cross_past)[i] : nullptr);
      hidden = block.hidden;
      if (keep_cache) {
        out.self_kv.push_back(std::move(block.self_kv));
        out.cross_kv.push_back(std::move(block.cross_kv));
      }
    }
    out.hidden = at::dropout(forward_child(*this, "final_layer_norm", hidden), dropout_, is_training());
    return out;
  }

  std::vector<std::shared_ptr<T5BlockImpl>> blocks;

 private:
  bool is_decoder_;
  double dropout_;
};

T5ForConditionalGeneration::T5ForConditionalGeneration(const nlohmann::json& config)
    : json_(config), config_(T5Config::from_json(config)) {
  auto shared = register_module("shared", torch::nn::Embedding(config_.vocab_size, config_.d_model));
  encoder_ = register_module("encoder", std::make_shared<T5StackImpl>(config_, false, shared->weight));
  decoder_ = register_module("decoder", std::make_shared<T5StackImpl>(config_, true, shared->weight));
  if (config_.tie_lm_head)
    register_module("lm_head", std::make_shared<TiedLinearImpl>(shared->weight));
  else
    register_module("lm_head",
                    torch::nn::Linear(torch::nn::LinearOptions(config_.d_model, config_.vocab_size).bias(false)));
}

bool T5ForConditionalGeneration::is_optional_key(const std::string& key) const {
  return key == "encoder.embed_tokens.weight" || key == "decoder.embed_tokens.weight" ||
         key == "lm_head.weight" ||
         // old checkpoints carry an unused bias table for the first cross-attention; HF ignores it
         key == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight";
}

// transformers 5.17 declares the lm_head tie for every T5 and unties only when the checkpoint brings its own
// lm_head.weight: a file without one gets the shared embedding even when the config says untied.
void T5ForConditionalGeneration::on_absent_optional_keys(const std::vector<std::string>& keys) {
  if (config_.tie_lm_head || std::find(keys.begin(), keys.end(), "lm_head.weight") == keys.end()) return;
  auto shared = named_children()["shared"]->named_parameters(false)["weight"];
  replace_module("lm_head", std::make_shared<TiedLinearImpl>(shared));
}

at::Tensor T5ForConditionalGeneration::shift_right(const at::Tensor& labels) const {
  if (!config_.decoder_start_token_id)
    fail(ErrorKind::InvalidArgument,
         "t5: config has no decoder_start_token_id, needed to derive decoder inputs from labels");
  at::Tensor shifted = at::empty_like(labels);
  shifted.select(-1, 0).fill_(*config_.decoder_start_token_id);
  shifted.narrow(-1, 1, labels.size(-1) - 1).copy_(labels.narrow(-1, 0, labels.size(-1) - 1));
  return shifted.masked_fill(shifted == -100, config_.pad_token_id);
}

at::Tensor T5ForConditionalGeneration::encode(const at::Tensor& input_ids, const at::Tensor& inputs_embeds,
                                              const at::Tensor& attention_mask,
                                              const std::vector<LayerKV>* prefixes) {
  if (input_ids.defined() == inputs_embeds.defined())
    fail(ErrorKind::InvalidArgument,
         "t5 forward: give exactly one of input_ids and inputs_embeds (or encoder_hidden_states)");
  at::Tensor embeds = input_ids.defined() ? embed(input_ids) : inputs_embeds;
  if (embeds.dim() != 3 || embeds.size(2) != config_.d_model)
    fail(ErrorKind::InvalidArgument,
         "t5 forward: inputs_embeds must be [batch, length, " + std::to_string(config_.d_model) + "]");
  const int64_t batch = embeds.size(0), length = embeds.size(1);
  const int64_t past = prefixes ? past_length(*prefixes, config_.num_layers, "past_key_values.encoder_self_attn") : 0;
  at::Tensor keep;
  if (attention_mask.defined())
    keep = keep_mask(attention_mask, batch, past, length, embeds.device(), "attention_mask");
  at::Tensor bias = encoder_->self_bias(length, past, keep, embeds.scalar_type(), embeds.device());
  return encoder_->forward(embeds, bias, past ? prefixes : nullptr, {}, {}, nullptr, false).hidden;
}

ModelOutput T5ForConditionalGeneration::forward(const ModelInputs& in) {
  const PastKeyValues empty_past;
  const PastKeyValues& past = in.past_key_values ? *in.past_key_values : empty_past;

  ModelOutput out;
  out.encoder_hidden_states = in.encoder_hidden_states.defined()
                                  ? in.encoder_hidden_states
                                  : encode(in.input_ids, in.inputs_embeds, in.attention_mask,
                                           past.encoder_self_attn.empty() ? nullptr : &past.encoder_self_attn);
  const at::Tensor& encoder = out.encoder_hidden_states;
  if (encoder.dim() != 3 || encoder.size(2) != config_.d_model)
    fail(ErrorKind::InvalidArgument,
         "t5 forward: encoder_hidden_states must be [batch, length, " + std::to_string(config_.d_model) + "]");

  at::Tensor labels = in.labels.defined() ? in.labels.to(encoder.device()) : at::Tensor();
  at::Tensor dec_embeds;
  if (in.decoder_inputs_embeds.defined()) {
    if (in.decoder_input_ids.defined())
      fail(ErrorKind::InvalidArgument, "t5 forward: give decoder_input_ids or decoder_inputs_embeds, not both");
    dec_embeds = in.decoder_inputs_embeds;
  } else if (in.decoder_input_ids.defined()) {
    dec_embeds = embed(in.decoder_input_ids.to(encoder.device()));
  } else if (labels.defined()) {
    if (labels.dim() != 2) fail(ErrorKind::InvalidArgument, "t5 forward: labels must be [batch, length]");
    dec_embeds = embed(shift_right(labels));
  } else {
    fail(ErrorKind::InvalidArgument, "t5 forward: give decoder_input_ids, decoder_inputs_embeds or labels");
  }
  if (dec_embeds.dim() != 3 || dec_embeds.size(2) != config_.d_model || dec_embeds.size(0) != encoder.size(0))
    fail(ErrorKind::InvalidArgument, "t5 forward: decoder inputs must be [" + std::to_string(encoder.size(0)) +
                                         ", length, " + std::to_string(config_.d_model) + "] embeddings");
  const int64_t batch = dec_embeds.size(0), length = dec_embeds.size(1);
  const at::ScalarType dtype = dec_embeds.scalar_type();

  const int64_t past_len = past_length(past.self_attn, config_.num_decoder_layers, "past_key_values.self_attn");
  if (!past.cross_attn.empty())
    past_length(past.cross_attn, config_.num_decoder_layers, "past_key_values.cross_attn");
  at::Tensor keep;
  if (in.decoder_attention_mask.defined())
    keep = keep_mask(in.decoder_attention_mask, batch, past_len, length, dec_embeds.device(), "decoder_attention_mask");
  at::Tensor self_bias = decoder_->self_bias(length, past_len, keep, dtype, dec_embeds.device());

  // Cross-attention sees the encoder positions; a mask that also covers an encoder prefix keeps its tail.
  at::Tensor cross_bias;
  if (in.attention_mask.defined()) {
    at::Tensor enc_keep = in.attention_mask.to(encoder.device()) != 0;
    const int64_t enc_len = encoder.size(1);
    if (enc_keep.dim() != 2 || enc_keep.size(0) != batch || enc_keep.size(1) < enc_len)
      fail(ErrorKind::InvalidArgument, "t5 forward: attention_mask " + shape_text(in.attention_mask.sizes()) +
                                           " does not cover the " + std::to_string(enc_len) + " encoder positions");
    enc_keep = enc_keep.narrow(1, enc_keep.size(1) - enc_len, enc_len);
    cross_bias = at::zeros({batch, 1, 1, enc_len}, dec_embeds.options())
                     .masked_fill(enc_keep.logical_not().view({batch, 1, 1, enc_len}), lowest_value(dtype));
  }

  auto decoded = decoder_->forward(dec_embeds, self_bias, past_len > 0 ? &past.self_attn : nullptr, encoder,
                                   cross_bias, past.cross_attn.empty() ? nullptr : &past.cross_attn, in.use_cache);
  at::Tensor sequence = decoded.hidden;
  if (config_.scale_decoder_outputs) sequence = sequence * std::pow(static_cast<double>(config_.d_model), -0.5);
  out.logits = forward_child(*this, "lm_head", sequence);

  if (labels.defined()) {
    if (labels.sizes() != out.logits.sizes().slice(0, 2))
      fail(ErrorKind::InvalidArgument, "t5 forward: labels " + shape_text(labels.sizes()) +
                                           " do not match the decoder length " + std::to_string(length));
    out.loss = at::cross_entropy_loss(out.logits.to(at::kFloat).view({-1, config_.vocab_size}),
                                      labels.reshape({-1}).to(at::kLong));
  }
  if (in.use_cache) {
    PastKeyValues cache;
    cache.self_attn = std::move(decoded.self_kv);
    cache.cross_attn = std::move(decoded.cross_kv);
    out.past_key_values = std::move(cache);
  }
  return out;
}

namespace {
const bool registered = register_model_type(
    "t5", [](const nlohmann::json& config) { return std::make_shared<T5ForConditionalGeneration>(config); });
}  // namespace

}  // namespace peft4j::models
