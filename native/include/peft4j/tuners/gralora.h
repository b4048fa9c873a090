// GraLoRA (Jung et al. 2025) as PEFT 0.21 implements it, on Linear and GPT-2 Conv1D layers: the weight is cut into
// a k × k grid of blocks, each input block n has its own A_n [in/k, r] and each output block j its own B_j
// [r, out/k]; output block j reads the j-th r/k slice of every input block's A_n x_n. Optionally a plain LoRA of
// rank hybrid_r beside it. Δh = alpha / (r + hybrid_r) · (GraLoRA(x) + B_general A_general x).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class GraloraLayer : public WeightDeltaLayer {
 public:
  GraloraLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "GRALORA"; }
  bool has_adapter(const std::string& adapter) const override { return settings_.count(adapter) > 0; }
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool routes_mixed_batches() const override { return false; }

  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);
  // ΔW in the base weight's layout (Linear [out, in], Conv1D [in, out]), scaling included.
  at::Tensor delta_weight(const std::string& adapter) const override;

 protected:
  void forget_adapter(const std::string& adapter) override;

 private:
  struct Settings {
    int64_t r = 0, k = 0, hybrid_r = 0;
    double scaling = 0, dropout = 0;
  };

  LinearShape shape_;
  std::shared_ptr<AdapterDict> gralora_A_, gralora_B_, gralora_A_general_, gralora_B_general_;
  std::map<std::string, Settings> settings_;
};

}  // namespace peft4j::tuners
