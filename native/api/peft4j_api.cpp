#include "peft4j_api.h"

#include <sstream>

#include "access.h"
#include "guard.h"
#include "peft4j/inspect.h"
#include "peft4j/parity.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/tuner.h"

namespace peft4j::api {

namespace {
std::vector<int64_t> shape_of(const int64_t* shape, int ndim) {
  if (ndim < 0) fail(ErrorKind::InvalidArgument, "ndim must be >= 0, got " + std::to_string(ndim));
  if (ndim > 0 && !shape) fail(ErrorKind::InvalidArgument, "shape is null");
  for (int i = 0; i < ndim; ++i)
    if (shape[i] < 0 && !(shape[i] == -1))
      fail(ErrorKind::InvalidArgument, "shape dimension " + std::to_string(i) + " is negative");
  return std::vector<int64_t>(shape, shape + ndim);
}

const std::string& name_at(const io::TensorMap& tensors, int64_t index) {
  if (index < 0 || index >= static_cast<int64_t>(tensors.size()))
    fail(ErrorKind::InvalidArgument, "tensor index " + std::to_string(index) + " out of range [0, " +
                                         std::to_string(tensors.size()) + ")");
  return std::next(tensors.begin(), index)->first;
}
}  // namespace

std::string version() { return guard([] { return std::string(PEFT4J_VERSION); }); }
std::string torchVersion() { return guard([] { return runtime::torch_version(); }); }
int numThreads() { return guard([] { return at::get_num_threads(); }); }
std::string blasLibrary() {
  return guard([] {
    // libtorch loads BLAS lazily on the first GEMM.
    at::matmul(at::ones({8, 8}), at::ones({8, 8}));
    return runtime::loaded_blas_library();
  });
}

std::string peftTypes() {
  return guard([] {
    std::string out;
    for (const auto& type : tuners::registered_tuners()) out += (out.empty() ? "" : ",") + type;
    return out;
  });
}

TensorHandle::TensorHandle() = default;

TensorHandle TensorHandle::fromData(const void* data, int64_t nbytes, const std::string& dtype, const int64_t* shape,
                                    int ndim) {
  return guard([&] {
    auto sizes = shape_of(shape, ndim);
    for (int64_t d : sizes)
      if (d < 0) fail(ErrorKind::InvalidArgument, "shape dimensions must be >= 0");
    auto type = io::scalar_type_from_safetensors(dtype, "tensor dtype");
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
    int64_t expected = t.numel() * static_cast<int64_t>(t.element_size());
    if (nbytes != expected)
      fail(ErrorKind::InvalidArgument, "data holds " + std::to_string(nbytes) + " bytes but a " + dtype + " tensor of " +
                                           std::to_string(t.numel()) + " elements needs " + std::to_string(expected));
    if (expected > 0) {
      if (!data) fail(ErrorKind::InvalidArgument, "data is null");
      std::memcpy(t.data_ptr(), data, static_cast<size_t>(expected));
    }
    return Access::wrap(t);
  });
}

bool TensorHandle::defined() const { return state_ && state_->tensor.defined(); }
std::string TensorHandle::dtype() const {
  return guard([&] { return io::safetensors_dtype_name(Access::tensor(*this).scalar_type()); });
}
int TensorHandle::ndim() const { return guard([&] { return static_cast<int>(Access::tensor(*this).dim()); }); }
int64_t TensorHandle::size(int dim) const { return guard([&] { return Access::tensor(*this).size(dim); }); }
int64_t TensorHandle::numel() const { return guard([&] { return Access::tensor(*this).numel(); }); }
int64_t TensorHandle::nbytes() const {
  return guard([&] {
    const auto& t = Access::tensor(*this);
    return t.numel() * static_cast<int64_t>(t.element_size());
  });
}
std::string TensorHandle::device() const { return guard([&] { return Access::tensor(*this).device().str(); }); }

void TensorHandle::copyTo(void* dst, int64_t nbytes) const {
  guard([&] {
    at::Tensor t = Access::tensor(*this).detach().to(at::kCPU).contiguous();
    int64_t have = t.numel() * static_cast<int64_t>(t.element_size());
    if (nbytes != have)
      fail(ErrorKind::InvalidArgument, "destination holds " + std::to_string(nbytes) + " bytes, the tensor has " +
                                           std::to_string(have));
    if (have > 0) {
      if (!dst) fail(ErrorKind::InvalidArgument, "destination is null");
      std::memcpy(dst, t.data_ptr(), static_cast<size_t>(have));
    }
  });
}

TensorHandle TensorHandle::to(const std::string& dtype) const {
  return guard([&] { return Access::wrap(Access::tensor(*this).to(io::scalar_type_from_safetensors(dtype, "dtype"))); });
}

TensorHandle TensorHandle::reshape(const int64_t* shape, int ndim) const {
  return guard([&] { return Access::wrap(Access::tensor(*this).reshape(shape_of(shape, ndim))); });
}

std::string TensorHandle::describe() const {
  return guard([&] {
    if (!defined()) return std::string("Tensor(undefined)");
    const auto& t = Access::tensor(*this);
    std::ostringstream out;
    out << "Tensor(" << io::safetensors_dtype_name(t.scalar_type()) << ", " << t.sizes() << ", " << t.device() << ")";
    return out.str();
  });
}

TensorMapHandle::TensorMapHandle() : state_(std::make_shared<TensorMapState>()) {}
int64_t TensorMapHandle::size() const { return static_cast<int64_t>(state_->tensors.size()); }
std::string TensorMapHandle::name(int64_t index) const { return guard([&] { return name_at(state_->tensors, index); }); }
bool TensorMapHandle::contains(const std::string& name) const { return state_->tensors.count(name) > 0; }
TensorHandle TensorMapHandle::get(const std::string& name) const {
  return guard([&] {
    auto it = state_->tensors.find(name);
    if (it == state_->tensors.end()) fail(ErrorKind::NotFound, "no tensor named '" + name + "'");
    return Access::wrap(it->second);
  });
}
void TensorMapHandle::put(const std::string& name, const TensorHandle& tensor) {
  guard([&] { state_->tensors[name] = Access::tensor(tensor); });
}
bool TensorMapHandle::remove(const std::string& name) { return state_->tensors.erase(name) > 0; }
int64_t TensorMapHandle::metadataSize() const { return static_cast<int64_t>(state_->metadata.size()); }
std::string TensorMapHandle::metadataKey(int64_t index) const {
  return guard([&] {
    if (index < 0 || index >= metadataSize())
      fail(ErrorKind::InvalidArgument, "metadata index " + std::to_string(index) + " out of range");
    return std::next(state_->metadata.begin(), index)->first;
  });
}
std::string TensorMapHandle::metadataValue(const std::string& key) const {
  return guard([&] {
    auto it = state_->metadata.find(key);
    if (it == state_->metadata.end()) fail(ErrorKind::NotFound, "no metadata key '" + key + "'");
    return it->second;
  });
}
void TensorMapHandle::putMetadata(const std::string& key, const std::string& value) { state_->metadata[key] = value; }

TensorMapHandle readSafetensors(const std::string& path) {
  return guard([&] {
    TensorMapHandle h;
    auto& state = Access::map(h);
    state.tensors = io::read_safetensors(path, &state.metadata);
    return h;
  });
}

void writeSafetensors(const std::string& path, const TensorMapHandle& tensors) {
  guard([&] {
    const auto& state = Access::map(tensors);
    io::write_safetensors(path, state.tensors, state.metadata);
  });
}

struct ParityState {
  std::unique_ptr<parity::Runner> runner;
};

ParityRunHandle::ParityRunHandle(const std::string& dir, const std::string& cases, const std::string& saveAdapters) {
  state_ = guard([&] {
    std::vector<std::string> only;
    std::stringstream list(cases);
    for (std::string name; std::getline(list, name, ',');)
      if (!name.empty()) only.push_back(name);
    auto state = std::make_shared<ParityState>();
    state->runner = std::make_unique<parity::Runner>(dir, only);
    if (!saveAdapters.empty()) state->runner->save_adapters_to(saveAdapters);
    return state;
  });
}
int64_t ParityRunHandle::caseCount() const { return static_cast<int64_t>(state_->runner->cases().size()); }
std::string ParityRunHandle::caseName(int64_t index) const {
  return guard([&] {
    if (index < 0 || index >= caseCount()) fail(ErrorKind::InvalidArgument, "case index out of range");
    return state_->runner->cases()[index];
  });
}
std::string ParityRunHandle::runCase(int64_t index) {
  return guard([&] {
    std::string lines;
    for (const auto& result : state_->runner->run_case(caseName(index))) lines += result.line() + "\n";
    return lines;
  });
}
int ParityRunHandle::passed() const { return state_->runner->passed(); }
int ParityRunHandle::failed() const { return state_->runner->failed(); }
int ParityRunHandle::skipped() const { return state_->runner->skipped(); }
std::string ParityRunHandle::summary() const { return state_->runner->summary(); }

std::string inspect(const std::string& path) { return guard([&] { return io::inspect(path); }); }

}  // namespace peft4j::api
