// TinyLoRA (Morris et al. 2026, "Learning to Reason in 13 Parameters") as PEFT 0.21 implements it, on Linear, GPT-2
// Conv1D and Embedding layers: LoRA-XS over the frozen rank-r SVD of the base weight, W ≈ U S Vᵀ, with A = √S Vᵀ and
// B = U √S frozen, and the r × r core R = Σ_i v_i P_i spanned by fixed random projections P (u × r × r) and a tiny
// trainable vector v (u) that weight_tying lets groups of layers share: ΔW = B R A. The v vectors are model-level
// ("base_model.tinylora_v.<group>" in saved files), A, B and (save_projection) P are saved per layer.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class TinyLoraLayer : public WeightDeltaLayer {
 public:
  TinyLoraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "TINYLORA"; }
  bool has_adapter(const std::string& adapter) const override { return settings_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter: `index` is the layer's position among the adapter's targets (its projections' seed offset),
  // `vectors` every group's v in group order, `group` the one this layer uses.
  void add(const std::string& adapter, const nlohmann::json& config, int64_t index, const std::vector<at::Tensor>& vectors,
           int64_t group, bool initialise);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out], Embedding [num_embeddings, dim]).
  at::Tensor delta_weight(const std::string& adapter) const override;
  // Whether this layer saves its projections (PEFT's tinylora_P.persistent); nullopt without adapters.
  std::optional<bool> saves_projection() const;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Settings {
    at::Tensor v;  // the group's trainable vector
    double dropout = 0;
  };
  at::Tensor core(const std::string& adapter) const;  // R = Σ_i v_i P_i

  bool embedding_ = false;
  LinearShape shape_;  // for an Embedding: in = embedding_dim, out = num_embeddings (the weight's [rows, cols])
  std::shared_ptr<AdapterDict> tinylora_A_, tinylora_B_, tinylora_P_, tinylora_v_;
  std::map<std::string, Settings> settings_;
};

}  // namespace peft4j::tuners
