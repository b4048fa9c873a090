// Safetensors read (memory-mapped, validated before trusted) and write (atomic).
// Format: 8-byte little-endian header length N, N bytes of JSON header, then the data section.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace peft4j::io {

using TensorMap = std::map<std::string, at::Tensor>;
using Metadata = std::map<std::string, std::string>;

// Safetensors dtype name ("F32", "BF16", ...) <-> torch scalar type; unknown names throw Error(Format).
at::ScalarType scalar_type_from_safetensors(const std::string& dtype, const std::string& context);
std::string safetensors_dtype_name(at::ScalarType type);  // Error(Unsupported) for types safetensors lacks
int64_t safetensors_dtype_size(const std::string& dtype);  // bytes per element, -1 when unknown

struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
};

struct Header {
  std::vector<TensorInfo> tensors;  // sorted by name
  Metadata metadata;
  uint64_t data_offset = 0;         // 8 + header length
};

// Reads and validates the header only (cheap for large files).
Header read_safetensors_header(const std::string& path);

// Reads every tensor. Tensors are CPU views of a private (copy-on-write) mapping of the file, so writing to
// them never touches the file; the mapping lives as long as any tensor does.
TensorMap read_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Writes tensors (any device, made contiguous on CPU) atomically: a temporary file beside `path`, fsync,
// rename. Header keys sorted, padded to 8 bytes as the reference implementation does.
void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

}  // namespace peft4j::io
