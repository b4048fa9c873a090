// What the libFuzzer targets share: each input goes through a file, since the readers under test take paths.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fuzz_testing {

// A directory of this process's own (in /dev/shm when there is one: the inputs never touch a disk).
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler that removes the directory runs after static destructors would have.
  static const std::string& dir = *new std::string([] {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/peft4j-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) std::abort();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_dir(), ignored);
    });
    return templ;
  }());
  return dir;
}

// Writes the input to `name` in the scratch directory and returns its path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
  return path;
}

}  // namespace fuzz_testing
