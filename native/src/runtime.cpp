#include "peft4j/runtime.h"

#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <mutex>

#include "peft4j/compat.h"

namespace peft4j::runtime {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    int threads = available_cores();
    if (const char* env = std::getenv("PEFT4J_NUM_THREADS")) {
      int requested = std::atoi(env);
      if (requested > 0) threads = requested;
    }
    at::set_num_threads(threads);
  });
}

std::string loaded_blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (path.find("blas") != std::string::npos) return path;
  }
  return "";
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace peft4j::runtime
