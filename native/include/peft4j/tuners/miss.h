// MiSS (Kang & Yin, "Matrix Shard Sharing", PEFT's MISS) as PEFT 0.21 implements it on Linear layers. One block
// D [r, out] is shared by every shard of the weight's input dimension: ΔW[o, i] = D[i mod r, o], so the update
// is (Σ over shards of x) · D. Variants (init_weights): true/false the balanced form above, "mini" a smaller block
// [r, mini_r] repeated along the output, "bat" a block per output shard applied to the weight's own blocks
// (nonlinear: W' = W + W·D + D blockwise). The layer keeps PEFT's name (miss_block.<adapter>).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class MissLayer : public AdapterLayer {
 public:
  enum class Variant { Balance, Bat, Mini };

  MissLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "MISS"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter; `init_weights` is the config's value (true, false, "bat" or "mini").
  void add(const std::string& adapter, int64_t r, int64_t mini_r, double dropout, const nlohmann::json& init_weights);
  at::Tensor block(const std::string& adapter) const { return miss_block_->parameter(adapter); }
  Variant variant() const { return variant_; }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  at::Tensor weight() const;
  // The balanced/mini update as a [r, out] block (mini repeated along the output).
  at::Tensor full_block(const std::string& adapter) const;
  // "bat": W·D + D over [r, r] blocks of `w`, in w's layout; with `reverse` the weight before it, (W − D)(I + D)⁻¹.
  at::Tensor bat_transform(const std::string& adapter, const at::Tensor& w, bool reverse) const;

  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  // PEFT fixes the variant per layer from the first adapter's init_weights; later adapters must agree.
  Variant variant_ = Variant::Balance;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> miss_block_ = adapter_dict("miss_block");
  std::map<std::string, int64_t> mini_r_;
  std::map<std::string, double> dropout_;
};

}  // namespace peft4j::tuners
