#include "peft4j/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "peft4j/error.h"

namespace peft4j::train {

double lr_factor(const std::string& type, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (type != "constant" && type != "linear" && type != "cosine")
    fail(ErrorKind::InvalidArgument, "lr_scheduler_type must be constant, linear or cosine, got '" + type + "'");
  const auto s = static_cast<double>(step);
  if (step < warmup_steps) return s / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  if (type == "constant") return 1.0;
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = (s - static_cast<double>(warmup_steps)) / decay_steps;
  if (type == "linear") return std::max(0.0, 1.0 - progress);
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace peft4j::train
