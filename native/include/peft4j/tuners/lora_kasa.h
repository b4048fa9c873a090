// KaSA (Knowledge-aware Singular-value Adaptation, arXiv:2412.06071) as PEFT 0.21's kasa_config: adding the adapter
// truncates the frozen base weight to its k − r largest singular components (k = min(in, out); destructive, as in
// PEFT: disabling or deleting the adapter does not restore the weight), and the update carries a learnable diagonal
// between the factors, ΔW = scaling·B·diag(lora_diag)·A ("lora_diag", saved as PEFT saves it). Linear layers only;
// KaSA adapters cannot share a model with other LoRA adapters.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace peft4j::tuners {

class PeftModel;

// PEFT's LoraModel._get_kasa_loss: the sum over KaSA layers of β·Σ lora_diag² + γ·(‖BᵀB − I‖_F + ‖AAᵀ − I‖_F) for
// `adapters` (default: the active ones), β and γ from each adapter's kasa_config, computed in f32. PEFT leaves it to
// the user to add to the task loss; so does peft4j. A zero scalar when no layer matches.
at::Tensor kasa_loss(const PeftModel& model, const std::vector<std::string>& adapters = {});

}  // namespace peft4j::tuners
