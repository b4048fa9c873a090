// AdaMSS (adaptive multi-subspaces) as PEFT 0.21 implements it on nn.Linear: the weight (with the bias as an extra
// input column) is decomposed by a seeded randomized SVD of rank r, W ≈ U S newB; the rows of U are clustered into
// num_subspaces groups by K-means (scikit-learn's, reproduced), and each group i trains a low-rank pair B_i A_i that
// maps the frozen projection newB x to its output rows: Δh[rows_i] = B_i A_i newB [x; 1]. ASA (use_asa) prunes
// subspaces during training by their gradient importance.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// PEFT's nn.ParameterList: parameters named "0", "1", ...
class IndexedParameters : public torch::nn::Module {
 public:
  explicit IndexedParameters(const std::vector<at::Tensor>& values);
  at::Tensor at(size_t i) const { return values_.at(i); }
  size_t size() const { return values_.size(); }

 private:
  std::vector<at::Tensor> values_;
};

class AdamssLayer : public WeightDeltaLayer {
 public:
  AdamssLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "ADAMSS"; }
  bool has_adapter(const std::string& adapter) const override { return scatter_index_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  // The weight part of ΔW = scatter(cat_i B_i A_i newB) (without the bias column).
  at::Tensor delta_weight(const std::string& adapter) const override;
  // The output rows of each subspace, in order (PEFT's seg_result), and how many there are.
  const std::vector<at::Tensor>& subspace_rows(const std::string& adapter) const { return rows_.at(adapter); }

  // ASA (PEFT's update_importance / reset_importance / masking): exponential averages of |p · ∇p| and of its change per
  // subspace parameter, the subspace score mean(ipt_A · unc_A) + mean(ipt_B · unc_B), and freezing a subspace.
  void update_importance(const std::string& adapter, double importance_beta, double uncertainty_beta);
  void reset_importance(const std::string& adapter);
  // Scores of the subspaces that have importance for both A and B, by subspace index.
  std::vector<std::pair<size_t, at::Tensor>> subspace_scores(const std::string& adapter) const;
  void set_subspace_active(const std::string& adapter, size_t subspace, bool active);

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  IndexedParameters& A(const std::string& adapter) const;
  IndexedParameters& B(const std::string& adapter) const;
  // scatter(cat_i B_i A_i newB) [out, in (+1 with a bias)] in `dtype`.
  at::Tensor full_delta(const std::string& adapter, at::ScalarType dtype) const;

  bool bias_ = false;
  int64_t in_features_ = 0, out_features_ = 0;
  std::shared_ptr<AdapterDict> adamss_A_, adamss_B_, adamss_newB_;
  std::map<std::string, std::vector<at::Tensor>> rows_;
  std::map<std::string, at::Tensor> scatter_index_;
  struct Importance {
    std::vector<at::Tensor> ipt_A, ipt_B, unc_A, unc_B;
  };
  std::map<std::string, Importance> importance_;
};

// scikit-learn 1.9's KMeans(n_clusters=k, init="random", n_init=1, max_iter=max_iter, random_state=seed) labels of the
// rows of X [n, d] (f32), as PEFT's clustering_Z calls it: centred data, seeds from numpy's legacy MT19937 choice,
// Lloyd iterations with strict or tolerance convergence and a final assignment.
at::Tensor adamss_kmeans(const at::Tensor& X, int64_t k, int64_t max_iter, uint32_t seed);

}  // namespace peft4j::tuners
