#include "peft4j/inspect.h"

#include <algorithm>
#include <sstream>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/model_dir.h"
#include "peft4j/safetensors.h"

namespace peft4j::io {

namespace {

struct Totals {
  uint64_t tensors = 0;
  uint64_t elements = 0;
  uint64_t bytes = 0;
};

void list_file(const std::string& file, std::ostringstream& out, Totals& totals) {
  Header header = read_safetensors_header(file);
  size_t width = 0;
  for (const auto& t : header.tensors) width = std::max(width, t.name.size());
  for (const auto& t : header.tensors) {
    uint64_t numel = 1;
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      shape += (i ? ", " : "") + std::to_string(t.shape[i]);
      numel *= static_cast<uint64_t>(t.shape[i]);
    }
    shape += "]";
    out << t.name << std::string(width - t.name.size() + 2, ' ') << t.dtype << std::string(6 - t.dtype.size(), ' ')
        << shape << "\n";
    totals.tensors += 1;
    totals.elements += numel;
    totals.bytes += t.end - t.begin;
  }
  for (const auto& [key, value] : header.metadata) out << "metadata " << key << " = " << value << "\n";
}

void list_config(const std::string& path, const std::string& title, std::ostringstream& out) {
  nlohmann::json config = read_json_file(path);
  if (!config.is_object()) fail(ErrorKind::Format, "'" + path + "' is not a JSON object");
  out << title << " (" << path << ")\n";
  for (const auto& [key, value] : config.items()) out << "  " << key << ": " << value.dump() << "\n";
}

}  // namespace

std::string inspect(const std::string& path) {
  std::ostringstream out;
  Totals totals;
  if (is_directory(path)) {
    std::string adapter_config = join_path(path, "adapter_config.json");
    if (is_regular_file(adapter_config)) {
      list_config(adapter_config, "adapter_config.json", out);
      std::string weights = join_path(path, "adapter_model.safetensors");
      if (!is_regular_file(weights))
        fail(ErrorKind::NotFound, "adapter directory '" + path + "' has no adapter_model.safetensors");
      out << "tensors (" << weights << ")\n";
      list_file(weights, out, totals);
    } else if (is_regular_file(join_path(path, "config.json"))) {
      list_config(join_path(path, "config.json"), "config.json", out);
      for (const auto& file : model_weight_files(path)) {
        out << "tensors (" << file << ")\n";
        list_file(file, out, totals);
      }
    } else {
      fail(ErrorKind::NotFound, "'" + path + "' is neither a model directory (config.json) nor an adapter directory "
                                "(adapter_config.json)");
    }
  } else {
    list_file(path, out, totals);
  }
  out << totals.tensors << " tensors, " << totals.elements << " elements, " << totals.bytes << " bytes\n";
  return out.str();
}

}  // namespace peft4j::io
