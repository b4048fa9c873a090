#include "peft4j/runtime.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>

#include "peft4j/compat.h"

#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif

namespace peft4j::runtime {

namespace {
std::atomic<int> configured_threads{1};
std::atomic<int> calls_in_flight{0};
thread_local int share_depth = 0;
}  // namespace

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
    configured_threads = threads;
  });
}

ThreadShare::ThreadShare() {
  if (share_depth++ > 0) return;
  const int calls = ++calls_in_flight;
#if AT_PARALLEL_OPENMP
  // libtorch sizes a thread's OpenMP team on that thread's first parallel call; settle that before choosing ours.
  at::get_num_threads();
  omp_set_num_threads(std::max(1, configured_threads.load() / calls));
#endif
}

ThreadShare::~ThreadShare() {
  if (--share_depth == 0) --calls_in_flight;
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
