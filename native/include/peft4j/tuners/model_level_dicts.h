// Model-level state below a container module (PEFT's ModuleDict of BufferDicts on the tuner, FRoD's
// "frod_V.<category>"), and the walk over every model-level AdapterDict that saving and deleting an adapter use.
// The one-level form, model_level_dict(tuner_module, name), is in tuner.h.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft4j/tuners/tuner.h"

namespace peft4j::tuners {

// The AdapterDict `name` inside the plain container module `group` on the tuner module, saved as
// "base_model.<group>.<name>"; both created on first use.
std::shared_ptr<AdapterDict> model_level_dict(torch::nn::Module& tuner_module, const std::string& group,
                                              const std::string& name);
// Every model-level AdapterDict with its path below the tuner module ("vera_A", "frod_V.self_attn_q_proj"); the base
// model is not searched.
std::vector<std::pair<std::string, std::shared_ptr<AdapterDict>>> model_level_dicts(torch::nn::Module& tuner_module);

}  // namespace peft4j::tuners
