#include "peft4j/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "peft4j/error.h"
#include "peft4j/files.h"

namespace peft4j::io {

namespace {

struct DType {
  const char* name;
  at::ScalarType type;
  int64_t size;
};

// Every dtype HF writes that torch can hold.
const DType kDTypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2}, {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DType* find_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  fail(ErrorKind::Format, "invalid safetensors file '" + path + "': " + what);
}

// A private, copy-on-write mapping of a whole file; tensors keep it alive through their deleters.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) {
      ErrorKind kind = errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io;
      fail(kind, "cannot open safetensors file '" + path + "': " + std::strerror(errno));
    }
  }
  ~Fd() { ::close(fd_); }
  int get() const { return fd_; }

 private:
  int fd_;
};

uint64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(ErrorKind::Io, "cannot stat '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::InvalidArgument, "'" + path + "' is not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

void read_exact(int fd, void* dst, size_t size, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(ErrorKind::Io, "cannot read '" + path + "': " + std::strerror(errno));
    if (n == 0) bad(path, "file ends early");
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

uint64_t header_length(int fd, uint64_t size, const std::string& path) {
  if (size < 8) bad(path, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  unsigned char le[8];
  read_exact(fd, le, 8, 0, path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | le[i];
  if (n > size - 8)
    bad(path, "header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
                  " bytes after the length field (truncated file or corrupt length)");
  if (n < 2) bad(path, "header length " + std::to_string(n) + " is too short for a JSON object");
  return n;
}

// A header value for an error message: scalars as written (long strings cut), arrays and objects by kind, since
// printing a deeply nested one would recurse as deep as it nests.
std::string brief(const nlohmann::json& v) {
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  const std::string text = v.dump();
  return text.size() > 80 ? text.substr(0, 77) + "..." : text;
}

uint64_t as_offset(const nlohmann::json& v, const std::string& path, const std::string& what) {
  if (!v.is_number_integer()) bad(path, what + " must be a non-negative integer, got " + brief(v));
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  int64_t s = v.get<int64_t>();
  if (s < 0) bad(path, what + " must be a non-negative integer, got " + brief(v));
  return static_cast<uint64_t>(s);
}

Header parse_header(const std::string& text, uint64_t data_size, const std::string& path) {
  if (text.empty() || text[0] != '{') bad(path, "header does not start with '{'");
  // Duplicate tensor names would silently shadow each other in a JSON object: reject them.
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json::parser_callback_t on_key = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    // As read_json_file: no deeper than Python's json reads, whose recursion limit is 1000.
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= 1000)
      bad(path, "header nests JSON deeper than 1000 levels");
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, on_key);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number such as 1e999
    bad(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) bad(path, "header is not a JSON object");
  if (!duplicate.empty()) bad(path, "tensor '" + duplicate + "' appears twice in the header");

  Header out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) bad(path, "__metadata__ must be an object of strings");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) bad(path, "__metadata__ value of '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) bad(path, where + " entry is not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(field)) bad(path, where + " has no '" + field + "'");
    if (!entry["dtype"].is_string()) bad(path, where + " dtype is not a string");
    TensorInfo info;
    info.name = name;
    info.dtype = entry["dtype"].get<std::string>();
    const DType* dtype = find_dtype(info.dtype);
    if (!dtype) bad(path, where + " has unknown or unsupported dtype '" + info.dtype + "'");
    const auto& shape = entry["shape"];
    if (!shape.is_array()) bad(path, where + " shape is not an array");
    // numel, and the product of the dimensions with zeros counted as one, which torch's contiguous strides reach:
    // both must fit in int64 (an empty tensor of shape [0, 2^62, 2^62] would overflow its strides).
    uint64_t numel = 1, span = 1;
    const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    for (const auto& d : shape) {
      uint64_t dim = as_offset(d, path, where + " shape dimension");
      const uint64_t counted = std::max<uint64_t>(dim, 1);
      if (dim > limit || span > limit / counted)
        bad(path, where + " shape dimension " + std::to_string(dim) + " (after " + std::to_string(info.shape.size()) +
                      " others) overflows the element count");
      numel *= dim;
      span *= counted;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) bad(path, where + " data_offsets must be [begin, end]");
    info.begin = as_offset(offsets[0], path, where + " data_offsets[0]");
    info.end = as_offset(offsets[1], path, where + " data_offsets[1]");
    if (info.begin > info.end)
      bad(path, where + " data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                    "] end before begin");
    if (info.end > data_size)
      bad(path, where + " data_offsets end " + std::to_string(info.end) + " lies beyond the data section of " +
                    std::to_string(data_size) + " bytes");
    uint64_t elem = static_cast<uint64_t>(dtype->size);
    if (numel > std::numeric_limits<uint64_t>::max() / elem || numel * elem != info.end - info.begin)
      bad(path, where + " is " + info.dtype + " " + shape.dump() + " (" + std::to_string(numel) +
                    " elements) but its data_offsets span " + std::to_string(info.end - info.begin) + " bytes");
    out.tensors.push_back(std::move(info));
  }
  // The data section must be covered exactly once: no overlap, no gap, nothing trailing.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : out.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < cursor)
      bad(path, "tensor '" + t->name + "' overlaps tensor '" + previous->name + "' (bytes " +
                    std::to_string(t->begin) + ".." + std::to_string(cursor) + ")");
    if (t->begin > cursor)
      bad(path, "bytes " + std::to_string(cursor) + ".." + std::to_string(t->begin) +
                    " of the data section belong to no tensor (before tensor '" + t->name + "')");
    cursor = t->end;
    previous = t;
  }
  if (cursor != data_size)
    bad(path, "data section is " + std::to_string(data_size) + " bytes but the tensors cover " +
                  std::to_string(cursor) + " (trailing bytes or missing tensors)");
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return out;
}

Header read_header_fd(int fd, uint64_t size, const std::string& path) {
  uint64_t n = header_length(fd, size, path);
  std::string text(n, '\0');
  read_exact(fd, text.data(), n, 8, path);
  Header header = parse_header(text, size - 8 - n, path);
  header.data_offset = 8 + n;
  return header;
}

}  // namespace

at::ScalarType scalar_type_from_safetensors(const std::string& dtype, const std::string& context) {
  const DType* d = find_dtype(dtype);
  if (!d) fail(ErrorKind::Format, context + ": unknown or unsupported dtype '" + dtype + "'");
  return d->type;
}

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& d : kDTypes)
    if (d.type == type) return d.name;
  fail(ErrorKind::Unsupported, std::string("safetensors has no dtype for torch type ") + c10::toString(type));
}

int64_t safetensors_dtype_size(const std::string& dtype) {
  const DType* d = find_dtype(dtype);
  return d ? d->size : -1;
}

Header read_safetensors_header(const std::string& path) {
  Fd fd(path);
  return read_header_fd(fd.get(), file_size(fd.get(), path), path);
}

TensorMap read_safetensors(const std::string& path, Metadata* metadata) {
  Fd fd(path);
  uint64_t size = file_size(fd.get(), path);
  Header header = read_header_fd(fd.get(), size, path);
  if (metadata) *metadata = header.metadata;
  auto mapping = std::make_shared<Mapping>();
  mapping->size = size;
  mapping->addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  if (mapping->addr == MAP_FAILED) fail(ErrorKind::Io, "cannot map '" + path + "': " + std::strerror(errno));
  char* data = static_cast<char*>(mapping->addr) + header.data_offset;
  TensorMap out;
  for (const auto& info : header.tensors) {
    auto options = at::TensorOptions().dtype(scalar_type_from_safetensors(info.dtype, path));
    char* ptr = data + info.begin;
    int64_t elem = safetensors_dtype_size(info.dtype);
    if (reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(elem) != 0) {
      // Misaligned for its element type (headers need not pad to 8 bytes): copy instead of viewing.
      at::Tensor copy = at::empty(info.shape, options);
      std::memcpy(copy.data_ptr(), ptr, info.end - info.begin);
      out.emplace(info.name, copy);
      continue;
    }
    out.emplace(info.name, at::from_blob(ptr, info.shape, [mapping](void*) {}, options));
  }
  return out;
}

void write_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  struct Entry {
    const std::string* name;
    at::Tensor data;
    std::string dtype;
  };
  std::vector<Entry> entries;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(ErrorKind::InvalidArgument, "a tensor cannot be named '__metadata__'");
    if (!tensor.defined()) fail(ErrorKind::InvalidArgument, "tensor '" + name + "' is undefined");
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    entries.push_back({&name, cpu, safetensors_dtype_name(cpu.scalar_type())});
  }
  // As the reference writer orders data: larger elements first (keeps alignment), then by name.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.data.element_size() > b.data.element_size();
  });
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  }
  uint64_t offset = 0;
  for (const auto& e : entries) {
    uint64_t bytes = static_cast<uint64_t>(e.data.numel()) * static_cast<uint64_t>(e.data.element_size());
    if (header.size() > 1) header += ",";
    header += nlohmann::json(*e.name).dump() + ":{\"dtype\":\"" + e.dtype + "\",\"shape\":" +
              nlohmann::json(e.data.sizes().vec()).dump() + ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_file_atomic(path, [&](int fd) {
    unsigned char le[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    write_all(fd, le, 8, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& e : entries)
      write_all(fd, e.data.data_ptr(), static_cast<size_t>(e.data.numel()) * e.data.element_size(), path);
  });
}

}  // namespace peft4j::io
