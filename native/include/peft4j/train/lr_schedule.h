// Learning-rate schedules as transformers' get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
// get_cosine_schedule_with_warmup (num_cycles 0.5) define their LambdaLR factor.
#pragma once

#include <cstdint>
#include <string>

namespace peft4j::train {

// The factor on the base learning rate for the optimizer step taken after `step` earlier steps (LambdaLR's
// last_epoch: 0 for the first step). `type` is "constant", "linear" or "cosine"; others -> Error(InvalidArgument).
double lr_factor(const std::string& type, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace peft4j::train
