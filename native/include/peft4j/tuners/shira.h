// SHiRA (Bhardwaj et al. 2024) as PEFT 0.21 implements it: a sparse high-rank update — r·(in + out) trainable
// entries of ΔW at fixed positions (a random mask), on Linear layers. The forward applies W + ΔW in one linear, as
// PEFT's does, rather than adding ΔW x to the base output.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class ShiraLayer : public LinearDeltaLayer {
 public:
  ShiraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "SHIRA"; }
  bool has_adapter(const std::string& adapter) const override { return r_.count(adapter) > 0; }
  // One adapter's update on its own: result + ΔW x (the layer's forward folds all active adapters into W, as PEFT).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, int64_t r, const nlohmann::json& config, bool initialise);
  // ΔW as [out, in], dense.
  at::Tensor delta_weight(const std::string& adapter) const override;
  // The positions of the trainable entries as [2, n] int32 (rows, columns), PEFT's shira_indices.
  at::Tensor indices(const std::string& adapter) const { return shira_indices_->parameter(adapter); }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> shira_weight_ = adapter_dict("shira_weight");
  // Frozen int32, saved as "<layer>.shira_indices" as PEFT does.
  std::shared_ptr<AdapterDict> shira_indices_ = adapter_dict("shira_indices");
  std::map<std::string, int64_t> r_;
  std::map<std::string, double> scaling_;
};

}  // namespace peft4j::tuners
