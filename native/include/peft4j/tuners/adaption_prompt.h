// Adaption prompt (LLaMA-Adapter, Zhang et al., 2023) as PEFT 0.21's AdaptedAttention: in each of the top
// adapter_layers attention layers, adapter_len learned prompt vectors ("adaption_prompt" [1, adapter_len, hidden],
// N(0, 1)) are projected by the layer's k_proj and v_proj; the layer's rotated queries attend over them alone
// (softmax in f32), the result is scaled by the zero-initialised gate ("adaption_gate" [1]), projected by o_proj
// and added to the attention output. The gate starts at 0, so a new adapter leaves the model's outputs unchanged.
// PEFT's names: base_model.model.<layer>.self_attn.adaption_prompt / adaption_gate, saved under the same keys.
// Llama and Mistral (PEFT's llama-style attention); one adapter at a time.
#pragma once

#include "peft4j/tuners/model_level.h"
