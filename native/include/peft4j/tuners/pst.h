// PST — parameter-efficient sparsity training (Li et al., IJCAI 2022; the authors' code: AliceMind S4/PST), peft_type
// "PST" (a peft4j value): the targeted weights are pruned while they are fine-tuned, with few trainable numbers. Per
// weight W [n, k] (as stored):
//     W′ = W + β·U·V                                   U [n, r] ~ N(0, 1), V [r, k] = 0
//     S  = |W′| + α₁·A·B + α₂·(R·1ᵀ + 1·Cᵀ)          A [n, r₂] ~ N(0, 1), B [r₂, k] = 0, R [n] = 0, C [k] = 0
//     M  = the v entries of largest S, v = n·k − ⌊n·k·p_t⌋     (per matrix; ties by flat index)
//     y  = (W′ ⊙ M)·x
// with a straight-through backward: M counts as 1 for S, so ∂S = G ⊙ W′ (G the gradient of the effective weight),
// ∂A = ∂S·Bᵀ, ∂B = Aᵀ·∂S, ∂R and ∂C its row and column sums; |W′| is not differentiated inside S.
// p_t follows the authors' cubic schedule (movement pruning's): p₀ for t ≤ t_w, p_f for t > T − t_c, in between
// p_f + (p₀ − p_f)·(1 − (t − t_w)/(T − t_w − t_c))³, t_w = initial_warmup·T, t_c = final_warmup·T; the mask is
// recomputed at every forward from the current scores at the sparsity of the steps done so far (as the authors' loop
// does), T = total_step or the trainer's number of steps.
//
// Saved: the sparse weight (W + β·U·V) ⊙ M as "<module>.pst_indices" (int32 flat indices of the kept entries) and
// "<module>.pst_values"; a loaded adapter holds that weight, which replaces W (its values trainable). Merging writes it.
#pragma once

#include <map>
#include <set>
#include <string>

#include "peft4j/tuners/parameter_delta.h"

namespace peft4j::tuners {

// The sparsity after `step` of `total` steps (the authors' schedule_sparsity_ratio).
double pst_sparsity(int64_t step, int64_t total, double initial_warmup, double final_warmup, double initial_sparsity,
                    double final_sparsity);

class PstLayer : public ParameterDeltaLayer {
 public:
  PstLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "PST"; }
  bool has_adapter(const std::string& adapter) const override { return sparsity_.count(adapter) > 0; }
  at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) override;

  // The training form (`stored` false) with the config's ranks and scales at sparsity `sparsity`, or the saved sparse
  // weight with `kept` entries (its values come from the file).
  void add(const std::string& adapter, const nlohmann::json& config, double sparsity, bool stored, int64_t kept = 0);
  void set_sparsity(const std::string& adapter, double sparsity) { sparsity_.at(adapter) = sparsity; }
  double sparsity(const std::string& adapter) const { return sparsity_.at(adapter); }
  bool stored(const std::string& adapter) const { return stored_.count(adapter) > 0; }

  // W′ (the weight after the low-rank update), S (the importance scores) and M (the mask), from `weight`.
  at::Tensor updated_weight(const std::string& adapter, const at::Tensor& weight);
  at::Tensor scores(const std::string& adapter, const at::Tensor& updated);
  at::Tensor mask(const std::string& adapter, const at::Tensor& scores) const;
  // The saved form: the kept entries' flat indices (int32) and values of (W + β·U·V) ⊙ M.
  std::pair<at::Tensor, at::Tensor> sparse_weight(const std::string& adapter);

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Scales {
    double weight_beta = 1, mask_alpha1 = 1, mask_alpha2 = 1;
  };
  std::shared_ptr<AdapterDict> pst_;      // per adapter: weight_U, weight_V, mask_scores_A/B/R/C
  std::shared_ptr<AdapterDict> indices_;  // the saved form
  std::shared_ptr<AdapterDict> values_;
  std::map<std::string, double> sparsity_;
  std::map<std::string, Scales> scales_;
  std::set<std::string> stored_;
};

}  // namespace peft4j::tuners
