// RoAd (Liao et al. 2024) as PEFT 0.21 implements it: the output h of a Linear is rotated in 2D pairs,
// y = R h, pairing element j of each half group with element j + group_size/2 of the same group and scaling each pair
// by α: y0 = α(cosθ h0 - sinθ h1), y1 = α(sinθ h0 + cosθ h1). road_theta / road_alpha hold θ and α: shared per pair
// (road_1), per element (road_2), or separate for the two columns of the rotation (road_4).
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class RoadLayer : public AdapterLayer {
 public:
  RoadLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "ROAD"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter; `key` (the module path) names the module when group_size does not divide its width.
  void add(const std::string& adapter, const nlohmann::json& config, const std::string& key, bool initialise);

  // R [out, out] with y = R h (PEFT's _get_delta_weight).
  at::Tensor rotation_matrix(const std::string& adapter) const;

 protected:
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  // The diagonal of R and the coefficient of each element's rotated partner, both [out].
  std::pair<at::Tensor, at::Tensor> columns(const std::string& adapter) const;

  int64_t out_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> road_theta_ = adapter_dict("road_theta");
  std::shared_ptr<AdapterDict> road_alpha_ = adapter_dict("road_alpha");
  std::map<std::string, std::string> variant_;
  std::map<std::string, int64_t> group_size_;
};

}  // namespace peft4j::tuners
