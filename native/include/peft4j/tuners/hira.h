// HiRA (Huang et al., ICLR 2025) as PEFT 0.21 implements it, on Linear, GPT-2 Conv1D and Embedding layers: a
// Hadamard high-rank update, the base weight modulated elementwise by a rank-r product, Δh = (W₀ ⊙ B A) x (for an
// embedding, the lookup of W₀ ⊙ (B A)ᵀ). Merging adds W₀ ⊙ B A with W₀ the weight before the first merge, and
// unmerging restores that weight.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class HiraLayer : public AdapterLayer {
 public:
  HiraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "HIRA"; }
  bool has_adapter(const std::string& adapter) const override { return dropout_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise);
  // PEFT's get_delta_weight: the modulation B A in the base weight's layout (Linear [out, in], Conv1D [in, out],
  // Embedding [num_embeddings, dim]); the weight update is W₀ ⊙ this.
  at::Tensor modulation(const std::string& adapter) const;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor base_weight() const;

  bool embedding_ = false;
  LinearShape shape_;  // Linear and Conv1D; for an Embedding: in = num_embeddings, out = embedding_dim
  std::shared_ptr<AdapterDict> hira_A_, hira_B_, hira_embedding_A_, hira_embedding_B_;
  std::map<std::string, double> dropout_;
  at::Tensor weight_before_merge_;  // PEFT's _base_weight_before_merge, while any adapter is merged
};

}  // namespace peft4j::tuners
