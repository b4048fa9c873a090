// Trainable tokens as PEFT 0.21 implements them (TRAINABLE_TOKENS): selected rows of an embedding matrix are trained
// and replace the base rows in the forward (W' = W with rows token_indices taken from trainable_tokens_delta), so
// the rest of the embedding stays frozen and unsaved. When the input embedding is targeted and the model ties other
// modules to it (an lm_head, T5's encoder/decoder embed_tokens), those get a tied layer holding the same tensor, as
// PEFT wraps them. Parameter and saved names are PEFT's (trainable_tokens_delta.<adapter>).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class TrainableTokensLayer : public AdapterLayer {
 public:
  // `saves_tied` false leaves the tied adapters out of saved files (PEFT's TrainableTokensWrapper, where the adapter
  // a tied module follows is saved once, with the embedding).
  TrainableTokensLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                       bool saves_tied = true);

  std::string peft_type() const override { return "TRAINABLE_TOKENS"; }
  bool has_adapter(const std::string& adapter) const override;
  // The base output with the adapter's rows in place (result is not reused: the rows replace, they do not add).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }
  bool saves_adapter(const std::string& adapter) const override { return saves_tied_ || !tied_.count(adapter); }

  // Adds an adapter training rows `indices`, starting from the base rows (`from_base`) or from N(0, 1).
  void add(const std::string& adapter, const std::vector<int64_t>& indices, bool from_base);
  // Adds an adapter that follows `owner`'s rows (same tensors): a module whose weight is tied to owner's.
  void add_tied(const std::string& adapter, const TrainableTokensLayer& owner);

  at::Tensor weight() const;  // the wrapped module's weight
  at::Tensor delta(const std::string& adapter) const { return trainable_tokens_delta_->parameter(adapter); }
  // The base weight with the rows of `adapters` replaced, in order.
  at::Tensor merged_weight(const std::vector<std::string>& adapters) const;

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor forward_with(const at::Tensor& x, const at::Tensor& w) const;
  at::Tensor index_tensor(const std::string& adapter, const at::Device& device) const;
  // PEFT refuses adapters whose rows overlap: which one wins would be undefined.
  void check_disjoint(const std::vector<std::string>& adapters) const;

  bool saves_tied_;
  std::set<std::string> tied_;  // adapters that follow another layer's rows
  bool embedding_ = false;  // otherwise a Linear (a tied lm_head): rows are output features
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> trainable_tokens_delta_ = adapter_dict("trainable_tokens_delta");
  std::map<std::string, std::vector<int64_t>> token_indices_;
  // The base rows at injection, restored by unmerge (PEFT's non-persistent trainable_tokens_original).
  std::map<std::string, at::Tensor> original_;
};

}  // namespace peft4j::tuners
