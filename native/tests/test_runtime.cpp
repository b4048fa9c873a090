#include <gtest/gtest.h>

#include "peft4j/runtime.h"
#include "peft4j_api.h"

// Debian's libtorch calls whichever libblas.so.3 the system selects; without OpenBLAS it is the
// reference BLAS, 36x slower. The core also raises libtorch's intra-op threads (1.13 defaults to 1).
TEST(Runtime, UsesOpenBlasAndAllCores) {
  std::string blas = peft4j::api::blasLibrary();  // runs a GEMM first, so BLAS is loaded
  EXPECT_NE(blas.find("openblas"), std::string::npos) << "loaded BLAS: '" << blas << "'";
  if (!std::getenv("PEFT4J_NUM_THREADS")) EXPECT_EQ(peft4j::api::numThreads(), peft4j::runtime::available_cores());
}
