// GLoRA (generalised LoRA, Chavan et al. 2023) as PEFT 0.21 implements it on nn.Linear: five trained paths A, B (on
// the weight), C, D, E (on the bias) give W' = W + W ⊙ A + B and b' = b + b ⊙ D + E + W C, each path a rank-r
// product Xd·Xu ("lora"), a column or vector X ("vector"), one scalar ("constant") or frozen zeros ("none"); C, D and
// E only act where the layer has a bias. The forward runs the layer with (W', b') per active adapter.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// One GLoRA path (PEFT's GloraLoraPath / GloraVectorPath / GloraScalarPath / GloraEmptyPath): parameters "Xd", "Xu"
// or "X", or the frozen buffer "zeros", as PEFT names them.
class GloraPath : public torch::nn::Module {
 public:
  enum class Kind { Lora, Vector, Constant, None };
  // A [rows, cols] path ("lora": Xd [rows, r] · Xu [r, cols]; "vector": X [rows, 1], or X [rows] when `column` is
  // false and cols is 0; "none": zeros of that shape). `initialise` false leaves the values to a load.
  GloraPath(Kind kind, int64_t rows, int64_t cols, int64_t r, bool column, bool init_weights);
  // The path's value, broadcastable against [rows, cols] (a 0-dim scalar for "constant").
  at::Tensor value() const;

 private:
  Kind kind_;
  at::Tensor Xd_, Xu_, X_, zeros_;
};

class GloraLayer : public AdapterLayer {
 public:
  GloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "GLORA"; }
  bool has_adapter(const std::string& adapter) const override { return adapters_.count(adapter) > 0; }
  // One adapter on the base output `result` (a mixed batch's rows): result + (layer(x; W', b') − result).
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;

  void add(const std::string& adapter, const nlohmann::json& config);

  bool can_merge() const override { return true; }
  // PEFT unmerges what is merged, then writes W0 + Σ (W0 ⊙ A + B) and b0 + Σ (b0 ⊙ D + E + W0 C) over all of them.
  void merge(const std::vector<std::string>& adapters) override;

 protected:
  // Σ layer(x; W'_i, b'_i) − n · layer(x), as PEFT sums the active adapters.
  at::Tensor adapted_forward(const at::Tensor& x) override;
  // W0 = (W − Σ B) / (1 + Σ A), b0 = (b − Σ E − Σ W0 C) / (1 + Σ D) over the merged adapters, then the others re-merged.
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override { adapters_.erase(adapter); }

 private:
  struct Effective {
    at::Tensor weight, bias;
  };
  Effective effective(const std::string& adapter) const;
  at::Tensor path(const std::shared_ptr<AdapterDict>& dict, const std::string& adapter, const at::Tensor& like) const;
  // W0 + Σ (W0 ⊙ A + B), b0 + Σ (...) written into the base layer for `adapters`.
  void write_merged(const std::vector<std::string>& adapters);

  std::shared_ptr<AdapterDict> glora_A_, glora_B_, glora_C_, glora_D_, glora_E_;
  std::set<std::string> adapters_;
  int64_t in_features_ = 0, out_features_ = 0;
};

}  // namespace peft4j::tuners
