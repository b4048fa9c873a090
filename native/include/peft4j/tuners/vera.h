// VeRA (Kopiczko et al. 2024) as PEFT 0.21 implements it: one pair of frozen random projections vera_A [r, in_max]
// and vera_B [out_max, r] shared by every adapted layer (held by the tuner as "base_model.vera_A/vera_B"), and
// per layer two trainable scaling vectors: Δh = λ_b ⊙ (B[:out] (λ_d ⊙ (A[:, :in] x))).
// PVeRA (pvera.h) is the same layer with a sampled middle; what the two share is declared here once.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class VeraLayer : public LinearDeltaLayer {
 public:
  VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "VERA"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  // Adds an adapter of rank r over the shared projections (sliced to this layer's shape).
  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, const at::Tensor& vera_A,
           const at::Tensor& vera_B, bool initialise);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]).
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  // The layer of a VeRA variant whose tensors are named "<prefix>_lambda_b", "<prefix>_lambda_d" and whose dropout
  // field is "<prefix>_dropout" (PVeRA: "pvera").
  VeraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state, const std::string& prefix);
  // λ_d's length for rank r: r here; PVeRA's holds means and log-variances, 2r.
  virtual int64_t lambda_d_size(int64_t r) const { return r; }
  // What B maps, from λ_d ⊙ (A x): itself here; PVeRA samples from it.
  virtual at::Tensor latent(const at::Tensor& scaled, const std::string& adapter) { return scaled; }
  // The leading rows of λ_d and A that ΔW uses: all here; PVeRA's means only.
  virtual int64_t merged_rows(int64_t lambda_d_size) const { return lambda_d_size; }
  void forget_adapter(const std::string& adapter) override;

 private:
  std::string prefix_;
  // Per-adapter dicts, registered in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> lambda_b_ = adapter_dict(prefix_ + "_lambda_b");
  std::shared_ptr<AdapterDict> lambda_d_ = adapter_dict(prefix_ + "_lambda_d");
  // The tuner's shared projections: PEFT's layers reference them too but save them only once, at model level.
  std::map<std::string, at::Tensor> A_, B_;
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> dropout_;
};

// PEFT's _init_vera_A_vera_B (and PVeRA's): projections as large as the largest target, drawn from a CPU generator
// seeded with projection_prng_key, A [a_rows, in_max] then B [out_max, r], kaiming-uniform (gain √2, fan_in), one
// pair per adapter, shared as "<prefix>_A" / "<prefix>_B" (share_projections).
void draw_vera_projections(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
                           InjectContext& ctx, const std::string& prefix, int64_t a_rows);

// The config rules VeRA and PVeRA share, each error naming the field.
void check_vera_config(const nlohmann::json& config, const std::string& dropout_field);

}  // namespace peft4j::tuners
