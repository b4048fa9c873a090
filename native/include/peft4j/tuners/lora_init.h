// LoRA's initialisations beyond B = 0, as PEFT 0.21's init_lora_weights offers them: from the base weight (PiSSA, its
// fast-SVD "pissa_niter_K", OLoRA, MiCA), random orthogonal factors ("orthogonal"), and from data the base model runs
// over (CorDA's covariance, EVA's SVD of layer inputs with rank redistribution, LoRA-GA's gradients). PiSSA, OLoRA,
// CorDA and LoRA-GA move part of W into the adapter: the base weight becomes the residual W − s·B·A, and
// save_converted_adapter turns a trained adapter back into a plain LoRA for the untouched base (PEFT's
// save_pretrained(path_initial_model_for_weight_conversion=...)). LoftQ stays refused (the quantisation issue owns it).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft4j/models/model.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

class LoraLayer;
class PeftModel;

// The fields of LoraConfig this file owns: init_lora_weights' sub-configs (plus loftq_config, refused here).
const std::vector<std::string>& lora_init_fields();

// Checks init_lora_weights (true, false, "gaussian", "pissa", "pissa_niter_<K>", "olora", "orthogonal", "mica",
// "corda", "eva", "lora_ga"; "loftq" refused by name) and its sub-configs, each error naming the field, and completes
// the sub-configs as PEFT's LoraConfig does: eva_config / corda_config get every field's default (EvaConfig() when
// init_lora_weights is "eva" and none was given, likewise CordaConfig()), lora_ga_config its defaults when given.
void check_lora_init(nlohmann::json& config);

// Whether the init leaves a residual base weight (PiSSA, OLoRA, CorDA, LoRA-GA): such an adapter belongs to the
// residual model, or is converted (save_converted_adapter) to apply to the untouched base.
bool init_mutates_base(const nlohmann::json& config);
// Whether the init needs data (CorDA, EVA, LoRA-GA).
bool init_needs_data(const nlohmann::json& config);
// Whether the layer at `key` gets LoRA's default init (A as nn.Linear's, B = 0): init_lora_weights true, or LoRA-GA
// for a layer without a gradient in `prepared` (PEFT's fallback, e.g. when an adapter is loaded rather than made).
bool init_is_default(const nlohmann::json& config, const std::string& key,
                     const std::map<std::string, at::Tensor>& prepared);

// Runs the base model over `data` (batches as the trainer collates them: input_ids, attention_mask, labels) for the
// data-driven inits, before the adapter's layers are built: CorDA's per-layer decomposition of W·C (C the covariance of
// the layer's inputs, each sequence run alone as PEFT's hook takes one per forward), LoRA-GA's mean gradient of each
// target weight, EVA's incremental SVD of the layer inputs with its rank redistribution. Returns the config the
// adapter is built with (EVA rewrites target_modules, rank_pattern and alpha_pattern as PEFT saves them) and fills
// `prepared` with the per-module tensors the layers initialise from ("<module path>|<name>").
nlohmann::json prepare_lora_init(const nlohmann::json& config, models::Model& model,
                                 const std::vector<models::ModelInputs>& data, std::map<std::string, at::Tensor>& prepared,
                                 const std::function<bool(const torch::nn::Module&)>& wrappable);

// Sets A and B of adapter `adapter` on `layer` (and the residual base weight) for the inits computed from the weight
// or from prepared data, as PEFT's LoraLayer.pissa_init / olora_init / orthogonal_init / mica_init / corda_init /
// lora_ga_init and EVA's load do; `key` is the layer's module path. Layers PEFT initialises the default way under
// such an init (Embedding targets, a LoRA-GA layer without a gradient) are left as LoraLayer::add made them.
void initialise_lora_layer(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                           const std::string& key, const std::map<std::string, at::Tensor>& prepared);

// torch.svd_lowrank(a, q, niter) as torch 2.x computes it (Halko et al.'s algorithm 5.1, the random test matrix drawn
// with torch.randn from the default generator of a's device): (U, S, V) with a ≈ U·diag(S)·Vᵀ.
std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(const at::Tensor& a, int64_t q, int64_t niter);

// PEFT's save_pretrained(dir, path_initial_model_for_weight_conversion=initial_dir) for adapter `name`: `initial_dir`
// holds the adapter as it was saved right after its PiSSA/OLoRA/CorDA/LoRA-GA initialisation; its adapter_config.json
// is rewritten with init_lora_weights true (as PEFT does), and `dir` receives a plain LoRA of rank 2r (lora_alpha
// doubled, or times √2 with rsLoRA; rank/alpha patterns doubled): A' = [A; A₀], B' = [B, −B₀], so B'·A' = B·A − B₀·A₀
// is the change training made, and the adapter applies to the untouched base model. The adapter's other tensors
// (modules_to_save copies such as a classifier) are kept as they are, where PEFT drops them and leaves an adapter it
// cannot load. Refused (as PEFT refuses it) with use_rslora together with rank_pattern or alpha_pattern.
void save_converted_adapter(const PeftModel& model, const std::string& dir, const std::string& name,
                            const std::string& initial_dir);

}  // namespace peft4j::tuners
