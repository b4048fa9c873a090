// Process-wide runtime settings of the core, applied once before any computation.
#pragma once

#include <string>

namespace peft4j::runtime {

// Sets libtorch's intra-op threads to the cores this process may use (libtorch 1.13 defaults to 1 here),
// or to PEFT4J_NUM_THREADS when set. Idempotent; every facade entry point calls it.
void init();

// The intra-op threads of one call into the core. While n such calls compute at once (from n threads), each runs
// with max(1, T / n) of the T threads init() chose, so several callers share the cores instead of each starting a
// full OpenMP team: teams that outnumber the cores wait on one another's preempted threads (400 forwards of the demo
// model took 98 s from 8 callers x 2 threads on 2 cores, 1.8 s from one caller; 0.9 s with the share). A call keeps
// the share it started with; nested shares on one thread count once. libtorch builds without OpenMP have one process-wide pool, which needs no share: there it does nothing.
class ThreadShare {
 public:
  ThreadShare();
  ~ThreadShare();
  ThreadShare(const ThreadShare&) = delete;
  ThreadShare& operator=(const ThreadShare&) = delete;
};

// Cores available to this process (sched affinity), at least 1.
int available_cores();

// Path of the BLAS library loaded into this process (from /proc/self/maps), empty when none is loaded.
std::string loaded_blas_library();

std::string torch_version();

}  // namespace peft4j::runtime
