// HuggingFace model directories: config.json plus model.safetensors or a sharded
// model.safetensors.index.json whose weight_map names the shard of every tensor.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "peft4j/safetensors.h"

namespace peft4j::io {

struct ModelDir {
  std::string path;
  nlohmann::json config;
  TensorMap tensors;
};

// The weight files of a model directory, in shard order (one entry for an unsharded model).
std::vector<std::string> model_weight_files(const std::string& dir);
ModelDir read_model_dir(const std::string& dir);

}  // namespace peft4j::io
