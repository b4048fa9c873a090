// The torch-free facade of the core, with its other parts (model_api.h, peft_api.h, train_api.h): the headers
// JavaCPP parses. Handles are small value types around shared state (pimpl), so Java can hold and copy them without
// seeing torch. Every function catches all C++ exceptions and rethrows a std::runtime_error whose message begins with
// the error kind ("FORMAT: ...", "NOT_FOUND: ...", "TORCH: ..."); JavaCPP turns it into a Java exception and the
// Java side rethrows it as a typed PeftException.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace peft4j {
namespace api {

struct TensorState;
struct TensorMapState;
struct ParityState;

// Runtime facts: sets up threads on first call of any facade function.
std::string version();
std::string torchVersion();
int numThreads();
std::string blasLibrary();
// The peft_types of every registered method, comma-separated and sorted.
std::string peftTypes();

// A tensor owned by the core. dtype names are safetensors' (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).
class TensorHandle {
 public:
  TensorHandle();
  // Copies `nbytes` bytes from `data`, which must equal numel(shape) x element size of `dtype`.
  static TensorHandle fromData(const void* data, int64_t nbytes, const std::string& dtype, const int64_t* shape,
                               int ndim);
  bool defined() const;
  std::string dtype() const;
  int ndim() const;
  int64_t size(int dim) const;
  int64_t numel() const;
  int64_t nbytes() const;
  std::string device() const;
  // Copies the tensor's contents (made contiguous, on CPU) into `dst`, which holds exactly nbytes() bytes.
  void copyTo(void* dst, int64_t nbytes) const;
  TensorHandle to(const std::string& dtype) const;
  TensorHandle reshape(const int64_t* shape, int ndim) const;
  std::string describe() const;

 private:
  std::shared_ptr<TensorState> state_;
  friend struct Access;
};

// Named tensors plus string metadata, as a safetensors file holds them; names are kept sorted.
class TensorMapHandle {
 public:
  TensorMapHandle();
  int64_t size() const;
  std::string name(int64_t index) const;
  bool contains(const std::string& name) const;
  TensorHandle get(const std::string& name) const;
  void put(const std::string& name, const TensorHandle& tensor);
  bool remove(const std::string& name);
  int64_t metadataSize() const;
  std::string metadataKey(int64_t index) const;
  std::string metadataValue(const std::string& key) const;
  void putMetadata(const std::string& key, const std::string& value);

 private:
  std::shared_ptr<TensorMapState> state_;
  friend struct Access;
};

TensorMapHandle readSafetensors(const std::string& path);
void writeSafetensors(const std::string& path, const TensorMapHandle& tensors);

// The parity runner over a directory of reference cases (python-parity/README.md): Java drives it case by
// case so that lines appear as they are produced.
class ParityRunHandle {
 public:
  // `cases` is a comma-separated list of case names; empty runs every case. A non-empty `saveAdapters`
  // writes each trained single-adapter case's adapter to <saveAdapters>/<case>.
  ParityRunHandle(const std::string& dir, const std::string& cases, const std::string& saveAdapters);
  int64_t caseCount() const;
  std::string caseName(int64_t index) const;
  // Runs one case and returns its lines ("PASS case check", ...), newline-separated.
  std::string runCase(int64_t index);
  int passed() const;
  int failed() const;
  int skipped() const;
  std::string summary() const;

 private:
  std::shared_ptr<ParityState> state_;
};

// The text `peft4j inspect PATH` prints.
std::string inspect(const std::string& path);

}  // namespace api
}  // namespace peft4j
