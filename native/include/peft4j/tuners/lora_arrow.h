// Arrow (arXiv:2405.11157) with GenKnowSub (ACL 2025), as PEFT 0.21's arrow_config: a router adapter
// ("arrow_router") routes every token among a library of task LoRA adapters loaded beside it. Each expert's
// prototype is the top right singular vector of its ΔW = B·A (15 power iterations from a random start, drawn from a
// generator seeded with rng_seed); a token's coefficients are the softmax over the top_k |token · prototype| (divided
// by router_temperature), and the update is Σ coefficient · scaling · B·A·x over the experts. With use_gks, the mean
// of the general adapters' A and B is subtracted from every task adapter once, before the first routing (in place,
// as in PEFT). The router's own A and B are unused. Linear and GPT-2 Conv1D layers; it does not merge.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peft4j::tuners {

class PeftModel;

// PEFT's create_arrow_model on a PeftModel: loads the adapter directories `task_dirs` as task_0, task_1, ... and,
// with arrow_config.use_gks, `general_dirs` as gks_0, ...; checks that they share their rank and target modules and
// wrap only Linear/Conv1D layers; then adds the router "arrow_router" (a LoRA of that rank on those modules whose
// arrow_config names the adapters) and makes it the active adapter.
void create_arrow_model(PeftModel& model, const std::vector<std::string>& task_dirs, const nlohmann::json& arrow_config,
                        const std::vector<std::string>& general_dirs = {});

}  // namespace peft4j::tuners
