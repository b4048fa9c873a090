// UniPELT (Mao et al., ACL 2022; peft_type "UNIPELT", a peft4j value: HF PEFT has no such method): LoRA, prefix tuning
// and a sequential bottleneck adapter in every layer, each scaled by its own learned gate, trained as one adapter. A
// gate reads the hidden state its part reads and averages over the sequence, g = mean_t sigmoid(W_g·x_t + b_g), one
// value per batch row (AdapterHub's use_gating, which its UniPELTConfig switches on for all three parts):
//
//   LoRA     h = W·x + g_L · B·A·x             g_L from the wrapped Linear's input; g_L replaces the scaling α/r
//   prefix   keys/values of the prefix × g_P   g_P from the attention input of that layer (one gate for keys and
//                                              values with shared_gating, else one each)
//   adapter  h = h + g_A · up(f(down(h)))      g_A from the adapter's input (BOTTLENECK's use_gating)
//
// The config nests the three parts' own configs, with their own field names (AdapterHub's UniPELTConfig is likewise
// the union of a PrefixTuningConfig, a SeqBnConfig and a LoRAConfig):
//
//   prefix_tuning   PREFIX_TUNING fields plus shared_gating (default true); default 10 virtual tokens through a
//                   projection of width 512 (AdapterHub's PrefixTuningConfig(prefix_length=10))
//   adapter         BOTTLENECK fields; default reduction 16, ReLU, after the FFN (AdapterHub's SeqBnConfig), use_gating
//                   always true
//   lora            LORA fields; default r 8 on the query and value projections (llama/qwen2/mistral q_proj, v_proj;
//                   gpt2 c_attn, which holds q, k and v together; bert query, value). lora_alpha, use_rslora and
//                   alpha_pattern are refused: the gate replaces the scaling they set
//
// Models: those both parts can be placed on, llama, qwen2, mistral, gpt2 and bert (T5 has no bottleneck placement).
//
// Each part is built by its own tuner (prefix_tuning.h, bottleneck.h, lora.h). Saved as the parts save: PEFT's
// "prompt_embeddings" plus "prefix_gates.weight" [L, g, d] and "prefix_gates.bias" [L, g] (g gates per layer), the
// LoRA keys with "lora_gate.weight"/"lora_gate.bias" beside lora_A/lora_B, the bottleneck keys with "adapters.gate".
// Trainable parameters: the prefix encoder's + L·g·(d + 1) + per LoRA target (r·(in + out) + in + 1) + per adapter
// (2·d_h·d_m + d_m + d_h + d_h + 1).
//
// The gates average over the whole input, so a token's output depends on later tokens (in training, on a causal LM,
// too: that is the method as published) and a KV cache cannot extend a forward token by token: forward() refuses
// use_cache, generate() recomputes the sequence each step. Not an identity at initialisation (the prefixes act
// from the start); cannot be merged (the prefixes and the gates depend on the input).
#pragma once

#include <nlohmann/json.hpp>

namespace peft4j::tuners {

// The PREFIX_TUNING, BOTTLENECK and LORA configs (with their peft_type) that a normalised UNIPELT config is made of.
nlohmann::json unipelt_prefix_config(const nlohmann::json& config);
nlohmann::json unipelt_adapter_config(const nlohmann::json& config);
nlohmann::json unipelt_lora_config(const nlohmann::json& config);

}  // namespace peft4j::tuners
