#include "peft4j/model_dir.h"

#include <set>

#include "peft4j/error.h"
#include "peft4j/files.h"

namespace peft4j::io {

namespace {
const char* kSingle = "model.safetensors";
const char* kIndex = "model.safetensors.index.json";

nlohmann::json read_index(const std::string& dir) {
  std::string path = join_path(dir, kIndex);
  nlohmann::json index = read_json_file(path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(ErrorKind::Format, "'" + path + "' has no weight_map object");
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it)
    if (!it.value().is_string())
      fail(ErrorKind::Format, "'" + path + "': weight_map entry '" + it.key() + "' is not a file name");
  return index;
}
}  // namespace

std::vector<std::string> model_weight_files(const std::string& dir) {
  if (is_regular_file(dir))
    fail(ErrorKind::InvalidArgument, "model path '" + dir + "' is a file; expected an HF model directory (config.json, " +
                                         kSingle + " or " + kIndex + ")");
  if (!is_directory(dir)) fail(ErrorKind::NotFound, "model directory '" + dir + "' does not exist");
  if (is_regular_file(join_path(dir, kSingle))) return {join_path(dir, kSingle)};
  if (!is_regular_file(join_path(dir, kIndex)))
    fail(ErrorKind::NotFound, "model directory '" + dir + "' has neither " + kSingle + " nor " + kIndex);
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const auto& [name, shard] : read_index(dir)["weight_map"].items()) {
    std::string file = shard.get<std::string>();
    if (file.find('/') != std::string::npos)
      fail(ErrorKind::Format, "'" + join_path(dir, kIndex) + "': shard '" + file + "' of '" + name +
                                  "' is not a file in the directory");
    if (seen.insert(file).second) files.push_back(join_path(dir, file));
  }
  return files;
}

ModelDir read_model_dir(const std::string& dir) {
  ModelDir out;
  out.path = dir;
  auto files = model_weight_files(dir);
  std::string config_path = join_path(dir, "config.json");
  if (!is_regular_file(config_path)) fail(ErrorKind::NotFound, "model directory '" + dir + "' has no config.json");
  out.config = read_json_file(config_path);
  if (!out.config.is_object()) fail(ErrorKind::Format, "'" + config_path + "' is not a JSON object");
  if (files.size() == 1 && files[0] == join_path(dir, kSingle)) {
    out.tensors = read_safetensors(files[0]);
    return out;
  }
  // Sharded: every tensor must sit in the shard the index names, and no shard may carry extras.
  nlohmann::json weight_map = read_index(dir)["weight_map"];
  for (const auto& file : files) {
    if (!is_regular_file(file)) fail(ErrorKind::NotFound, "shard '" + file + "' named in the index does not exist");
    for (auto& [name, tensor] : read_safetensors(file)) {
      auto listed = weight_map.find(name);
      if (listed == weight_map.end() || join_path(dir, listed->get<std::string>()) != file)
        fail(ErrorKind::Format, "shard '" + file + "' holds tensor '" + name + "' that the index does not assign to it");
      out.tensors.emplace(name, tensor);
    }
  }
  for (const auto& [name, shard] : weight_map.items())
    if (!out.tensors.count(name))
      fail(ErrorKind::Format, "tensor '" + name + "' is missing from shard '" + shard.get<std::string>() + "'");
  return out;
}

}  // namespace peft4j::io
