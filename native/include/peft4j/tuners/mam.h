// Mix-and-match adapter (He et al., ICLR 2022, "MAM adapter"; peft_type "MAM", a peft4j value: HF PEFT has no such
// method): prefix tuning on every attention layer plus a scaled parallel bottleneck adapter on every FFN, trained
// together as one adapter. In the unified view: Δh_attn from prefix keys/values, Δh_ffn = s · up(f(down(x))) added
// to the FFN output, x the FFN input.
//
// The config nests the two parts' own configs, with their own field names, rather than flattening them (AdapterHub's
// MAMConfig is likewise the union of a PrefixTuningConfig and a ParBnConfig):
//
//   prefix_tuning   PREFIX_TUNING fields (num_virtual_tokens, prefix_projection, encoder_hidden_size, init_weights);
//                   default 30 virtual tokens through a projection of width 800 (AdapterHub's MAMConfig)
//   ffn_adapter     BOTTLENECK fields (reduction_factor or bottleneck_size, scaling, non_linearity, init_weights,
//                   dropout, leave_out, adapter_drop); default reduction 2, ReLU, scaling 4.0 (ParBnConfig). The
//                   placement is fixed: parallel to the FFN (is_parallel true, output_adapter true, mh_adapter false)
//
// Each part is built by its own tuner (prefix_tuning.h, bottleneck.h): the prefix encoder is PeftModel's
// "prompt_encoder.<adapter>", the FFN adapters sit in the model as DeltaLayers. Saved as PEFT's prefix tuning saves
// ("prompt_embeddings") plus the bottleneck keys ("base_model.model.layers.0.mlp.adapters.adapter_down.weight").
// Trainable parameters: the prefix encoder's plus L · (2·d_h·d_m + d_m + d_h). Not an identity at initialisation
// (prefix keys/values change every attention, even when zero); the FFN part alone is (up-projection zero). Cannot be
// merged: the prefixes are no weight of the base model.
#pragma once

#include <nlohmann/json.hpp>

namespace peft4j::tuners {

// The PREFIX_TUNING and BOTTLENECK configs (with their peft_type) that a normalised MAM config is made of.
nlohmann::json mam_prefix_config(const nlohmann::json& config);
nlohmann::json mam_ffn_adapter_config(const nlohmann::json& config);

}  // namespace peft4j::tuners
