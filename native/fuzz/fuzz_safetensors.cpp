// libFuzzer target: the safetensors reader (native/src/io/safetensors.cpp) on arbitrary bytes. A file either is
// refused with a peft4j::Error, or every tensor it yields lies inside the file and writes back to a file that reads
// back the same. Any other exception, a crash or a sanitizer report is a bug.
#include <cstring>

#include "fuzz_testing.h"
#include "peft4j/error.h"
#include "peft4j/safetensors.h"

namespace {

volatile uint8_t sink;

// Reads every byte of the tensor (into a volatile, so that the reads stay): a view past the mapping faults here.
void read_all(const at::Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.data_ptr());
  uint8_t sum = 0;
  for (size_t i = 0; i < t.nbytes(); ++i) sum = static_cast<uint8_t>(sum + p[i]);
  sink = sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peft4j::io;
  const std::string path = fuzz_testing::write_input("input.safetensors", data, size);
  TensorMap tensors;
  Metadata metadata;
  try {
    read_safetensors_header(path);
    tensors = read_safetensors(path, &metadata);
  } catch (const peft4j::Error&) {
    return 0;
  }
  for (const auto& [name, t] : tensors) read_all(t);
  const std::string copy = fuzz_testing::scratch_dir() + "/copy.safetensors";
  write_safetensors(copy, tensors, metadata);
  Metadata metadata_back;
  TensorMap back = read_safetensors(copy, &metadata_back);
  if (back.size() != tensors.size() || metadata_back != metadata) std::abort();
  for (const auto& [name, t] : tensors) {
    const at::Tensor& u = back.at(name);
    if (u.sizes() != t.sizes() || u.scalar_type() != t.scalar_type() || u.nbytes() != t.nbytes() ||
        std::memcmp(u.data_ptr(), t.data_ptr(), t.nbytes()) != 0)
      std::abort();
  }
  return 0;
}
