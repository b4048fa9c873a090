// What the methods that wrap one dense projection share (VeRA, FourierFT, RandLoRA, SHiRA, C3A): the shape and
// weight layout of the wrapped nn.Linear or GPT-2 Conv1D, the largest target shape that sizes a shared random
// projection (PEFT's _find_dim), and the config fields these methods check alike.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

struct LinearShape {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool fan_in_fan_out = false;  // Conv1D stores its weight [in, out]
};

// The shape of an nn.Linear, or of a Conv1D when `conv1d` is allowed; an AdapterLayer is looked through to the
// module it wraps. nullopt for any other module.
std::optional<LinearShape> linear_shape(const torch::nn::Module& module, bool conv1d = true);
// The shape of the module a `method` layer wraps; Error(Unsupported) "<method> wraps Linear (and Conv1D) modules
// only" for any other module.
LinearShape wrapped_linear_shape(const torch::nn::Module& module, const std::string& method, bool conv1d = true);

// The "weight" of a Linear or Conv1D as stored, and its "bias" (undefined when it has none).
at::Tensor linear_weight(const torch::nn::Module& module);
at::Tensor linear_bias(const torch::nn::Module& module);

// PEFT's _find_dim: the elementwise largest (out_features, in_features) over the targeted modules.
std::pair<int64_t, int64_t> largest_target_shape(models::Model& model, const std::vector<std::string>& targets);

// dtype and device of the first target's weight: where model-level tensors live, as PEFT moves them there.
at::TensorOptions target_options(models::Model& model, const std::vector<std::string>& targets);

// The layer of the methods that wrap one dense projection with an additive ΔW: a WeightDeltaLayer around an nn.Linear
// (or GPT-2's Conv1D when `conv1d`), whose shape it keeps; any other module is Error(Unsupported) naming `method`.
class LinearDeltaLayer : public WeightDeltaLayer {
 public:
  LinearDeltaLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state,
                   const std::string& method, bool conv1d = true);

 protected:
  LinearShape shape_;
};

// VeRA's and RandLoRA's shared random projections: registers `a` and `b`, moved to the targets' dtype and device, as
// frozen model-level tensors "<prefix>_A" / "<prefix>_B" of ctx.adapter (saved unless the config's save_projection is
// false, PEFT's BufferDict(persistent=...)), and hands them to the layers as ctx.shared["<prefix>_A"/"_B"].
void share_projections(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
                       InjectContext& ctx, const std::string& prefix, at::Tensor a, at::Tensor b);

// PEFT's seeded locations in an out × in matrix (FourierFT's frequencies, WaveFT's wavelet coefficients): the first
// `count` entries of randperm(rows·cols) from a fresh CPU generator seeded with `seed`, as [2, count] (row, column).
// libtorch 1.13's CPU randperm gives torch 2.11's permutation (checked for 2048, 4096 and 100000 elements, and by the
// FourierFT and WaveFT parity rows).
at::Tensor seeded_locations(int64_t rows, int64_t cols, int64_t count, int64_t seed);

// Low-precision CPU tensors are computed in f32 (CPU bf16/f16 matmuls are slow), as PEFT's get_delta_weight does.
bool upcast_on_cpu(const at::Tensor& t);

// Checks shared by these methods' configs, each error naming the field: `bias` (when the method has it) "none" or
// "all" — PEFT's "<method>_only" saves the biases without training them and is refused — and a dropout field (when
// given) in [0, 1).
void check_linear_method_config(const nlohmann::json& config, bool has_bias, const std::string& dropout_field = "");

// The rule of the configs whose __post_init__ has it (PSOFT, DEFT): layers_to_transform and layers_pattern select
// layers of a list of target_modules, not of a regular expression (Error(InvalidArgument) naming the field).
void check_layers_need_target_list(const nlohmann::json& config);

}  // namespace peft4j::tuners
