// OFT (Qiu et al. 2023; Liu et al. 2024 for the Cayley–Neumann form) as PEFT 0.21 implements it: a block-diagonal
// orthogonal matrix R, each block the Cayley transform of a skew-symmetric matrix stored as its upper triangle
// (oft_R.<adapter>.weight, [blocks, b(b-1)/2]), rotates the input of a Linear (x -> x R, then the base layer) or the
// output of an Embedding. Options: exact or Neumann-series Cayley, COFT's projection, block sharing.
#pragma once

#include <map>
#include <string>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// PEFT's OFTRotationModule: holds one adapter's "weight" and turns it into rotation blocks.
class OftRotation : public torch::nn::Module {
 public:
  OftRotation(int64_t blocks, int64_t block_size, int64_t in_features, const nlohmann::json& config,
              const at::TensorOptions& options);

  // The weight, first projected in place when COFT is on (PEFT projects it at every use).
  at::Tensor current_weight();
  // The orthogonal blocks [rows of w, b, b] of a weight (the Cayley transform of its skew-symmetric matrices).
  at::Tensor blocks(const at::Tensor& w) const;
  // x [..., in_features] with each consecutive group of b features multiplied by its block: x_g -> x_g R_g.
  at::Tensor rotate(const at::Tensor& x);
  // The full block-diagonal matrix [in_features, in_features], built in `dtype`.
  at::Tensor block_diagonal(at::ScalarType dtype);

  at::Tensor weight;

 private:
  at::Tensor skew(const at::Tensor& vec) const;
  at::Tensor upper(const at::Tensor& matrix) const;
  at::Tensor project(const at::Tensor& vec) const;
  int64_t num_blocks() const;  // blocks along in_features (shared blocks repeat)

  int64_t block_size_;
  int64_t in_features_;
  bool coft_;
  double eps_;
  bool block_share_;
  bool neumann_;
  int64_t neumann_terms_;
};

class OftLayer : public AdapterLayer {
 public:
  OftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state);

  std::string peft_type() const override { return "OFT"; }
  bool has_adapter(const std::string& adapter) const override;
  at::Tensor apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) override;
  bool can_merge() const override { return true; }

  // Adds an adapter: r blocks or blocks of oft_block_size (the other derived, adjusted to divide the features as
  // PEFT adjusts it); random N(0, 0.1) weights unless init_weights (zeros: the identity rotation).
  void add(const std::string& adapter, const nlohmann::json& config, bool initialise);

  // The block-diagonal rotation [features, features] (PEFT's get_delta_weight).
  at::Tensor rotation_matrix(const std::string& adapter);
  int64_t blocks(const std::string& adapter) const { return r_.at(adapter); }
  int64_t block_size(const std::string& adapter) const { return block_size_.at(adapter); }

 protected:
  at::Tensor adapted_forward(const at::Tensor& x) override;
  void merge_adapter(const std::string& adapter) override;
  void unmerge_adapter(const std::string& adapter) override;
  void forget_adapter(const std::string& adapter) override;

 private:
  OftRotation& rotation(const std::string& adapter) const;

  bool embedding_ = false;  // Embedding: the rotation acts on the output vectors
  int64_t in_features_ = 0;
  // Per-adapter dicts, declared (and so registered) in PEFT's order, so that parameters list as PEFT's do.
  std::shared_ptr<AdapterDict> oft_R_ = adapter_dict("oft_R");
  std::shared_ptr<AdapterDict> oft_embedding_R_ = adapter_dict("oft_embedding_R");
  std::map<std::string, int64_t> r_;
  std::map<std::string, int64_t> block_size_;
};

}  // namespace peft4j::tuners
