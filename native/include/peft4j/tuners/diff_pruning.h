// Diff pruning (Guo et al., ACL 2021; the authors' code: DiffPruning, run_glue_diffpruning.py), peft_type
// "DIFF_PRUNING" (a peft4j value): a task-specific difference θ = θ₀ + z ⊙ w on every parameter of the targeted modules
// (weights and biases), made sparse by a relaxed L0 penalty and then a magnitude projection. Field names as the
// authors' later library (DiffPruning by Hauzenberger et al.) spells them.
//
// L0 phase. w starts at 0 (the identity). z is a hard-concrete gate per entry with log-alpha α (alpha_init 5):
//     training  u ~ U(ε, 1 − ε) (ε = 1e-4), s = σ(log u − log(1 − u) + α), z = clamp(s·(r − l) + l, 0, 1)
//     eval      z = clamp(σ(α)·(r − l) + l, 0, 1)
// with the stretch l = concrete_lower (−1.5), r = concrete_upper (1.5), temperature 1. structured_diff_pruning (the
// default) adds one more gate per tensor, multiplying its z. The training loss gains the expected L0 norm
//     sparsity_pen · [Σ σ(α − log(−l/r)) + Σ_groups σ(α_g − log(−l/r))],
// and the gates train at their own learning rate (learning_rate_alpha 0.1; w at the trainer's).
// Projection. After total_step − fixmask_steps steps (fixmask_steps null: half of them) the difference z ⊙ w (eval
// gates) keeps its fixmask_pct·N entries of largest magnitude over all adapted tensors together (ties by position), the
// rest becomes 0, and w takes those values. Fixmask phase: θ = θ₀ + M ⊙ w, only the support trains (entries off it stay
// exactly at θ₀), no penalty.
//
// Saved: the sparse difference per tensor, "<module>.weight_diff_indices" (int32 flat indices) and
// "<module>.weight_diff_values" (and "bias_…"): after the projection its support, before it the entries where z ⊙ w is
// nonzero. A loaded adapter holds that sparse difference (its values trainable: fixmask training). Merging adds it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/parameter_delta.h"

namespace peft4j::tuners {

class DiffPruningLayer : public ParameterDeltaLayer {
 public:
  DiffPruningLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  enum class Phase { L0, Fixmask, Sparse };

  std::string peft_type() const override { return "DIFF_PRUNING"; }
  bool has_adapter(const std::string& adapter) const override { return adapters_.count(adapter) > 0; }
  at::Tensor adapted(const std::string& adapter, const std::string& name, const at::Tensor& value) override;

  // The L0 phase with the config's gates (`sparse` false), or a saved sparse difference with `sizes` entries per
  // parameter (its values come from the file).
  void add(const std::string& adapter, const nlohmann::json& config, bool sparse,
           const std::map<std::string, int64_t>& sizes = {});
  Phase phase(const std::string& adapter) const { return adapters_.at(adapter).phase; }
  const std::vector<std::string>& parameters() const { return parameters_; }

  // The difference z ⊙ w (eval gates) or M ⊙ w (fixmask) or the sparse one, dense, for parameter `name`.
  at::Tensor difference(const std::string& adapter, const std::string& name);
  // The same with the deterministic gates, whatever the mode: what evaluation, the projection and the saved form use.
  at::Tensor eval_difference(const std::string& adapter, const std::string& name);
  // The expected L0 norm of the adapter's gates here (before sparsity_pen).
  at::Tensor expected_l0(const std::string& adapter) const;
  // Enters the fixmask phase: `support` (flat indices) per parameter; w takes the difference's values there.
  void fix_mask(const std::string& adapter, const std::map<std::string, at::Tensor>& support);
  // The saved form of parameter `name`: flat indices (int32) and values.
  std::pair<at::Tensor, at::Tensor> sparse_difference(const std::string& adapter, const std::string& name);

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Adapter {
    Phase phase = Phase::L0;
    double lower = -1.5, upper = 1.5;
    bool structured = true;
    std::map<std::string, at::Tensor> mask;  // fixmask phase, by parameter
  };
  at::Tensor gate(const at::Tensor& log_alpha, const Adapter& a, bool sample) const;
  at::Tensor difference(const std::string& adapter, const std::string& name, bool sample);
  std::vector<std::string> parameters_;  // weight, then bias where the module has one
  std::map<std::string, std::shared_ptr<AdapterDict>> diff_, log_alpha_, group_log_alpha_, indices_, values_;
  std::map<std::string, Adapter> adapters_;
};

}  // namespace peft4j::tuners
