#include "peft4j/models/layer_replication.h"

#include <string>

#include "peft4j/error.h"

namespace peft4j::models {

std::vector<int64_t> replicated_layer_sources(const LayerMap& map, int64_t num_layers) {
  std::vector<int64_t> sources;
  for (const auto& [start, end] : map) {
    if (start < 0 || end > num_layers || start > end)
      fail(ErrorKind::InvalidArgument, "layer_replication range [" + std::to_string(start) + ", " + std::to_string(end) +
                                           ") is outside the model's " + std::to_string(num_layers) + " layers");
    for (int64_t i = start; i < end; ++i) sources.push_back(i);
  }
  if (sources.empty()) fail(ErrorKind::InvalidArgument, "layer_replication leaves the model without layers");
  return sources;
}

void share_weights(torch::nn::Module& copy, const torch::nn::Module& source) {
  auto from_params = source.named_parameters(true);
  auto from_buffers = source.named_buffers(true);
  at::NoGradGuard no_grad;
  for (auto& p : copy.named_parameters(true)) {
    const auto* s = from_params.find(p.key());
    if (!s) fail(ErrorKind::Internal, "replicated layer has a parameter '" + p.key() + "' its source lacks");
    p.value().set_(*s);
    p.value().set_requires_grad(s->requires_grad());
  }
  for (auto& b : copy.named_buffers(true)) {
    const auto* s = from_buffers.find(b.key());
    if (!s) fail(ErrorKind::Internal, "replicated layer has a buffer '" + b.key() + "' its source lacks");
    b.value().set_(*s);
  }
}

}  // namespace peft4j::models
