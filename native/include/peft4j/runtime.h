// Process-wide runtime settings of the core, applied once before any computation.
#pragma once

#include <string>

namespace peft4j::runtime {

// Sets libtorch's intra-op threads to the cores this process may use (libtorch 1.13 defaults to 1 here),
// or to PEFT4J_NUM_THREADS when set. Idempotent; every facade entry point calls it.
void init();

// Cores available to this process (sched affinity), at least 1.
int available_cores();

// Path of the BLAS library loaded into this process (from /proc/self/maps), empty when none is loaded.
std::string loaded_blas_library();

std::string torch_version();

}  // namespace peft4j::runtime
