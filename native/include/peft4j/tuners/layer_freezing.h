// Layer freezing, peft_type "LAYER_FREEZING" (a peft4j value): full fine-tuning of chosen transformer layers with the
// rest frozen, as a tuner. `num_trainable_layers` = k trains the top k layers of every layer stack; otherwise
// `trainable_modules` (a regular expression matched against whole module paths, or a list of names matched as PEFT
// matches target_modules) picks the modules. Every module with weights under the chosen ones (projections, norms,
// embeddings) gets a trainable copy per adapter, as LN tuning does (ln_tuning.h), so the base stays frozen and an
// untrained adapter is the identity. Saved keys are the model's own ("base_model.model.<module>.weight"), so an
// adapter holds exactly the trained tensors; merging swaps the copies in (one adapter at a time).
#pragma once

#include "peft4j/tuners/ln_tuning.h"

namespace peft4j::tuners {

class LayerFreezingLayer : public LnTuningLayer {
 public:
  using LnTuningLayer::LnTuningLayer;
  std::string peft_type() const override { return "LAYER_FREEZING"; }
};

}  // namespace peft4j::tuners
