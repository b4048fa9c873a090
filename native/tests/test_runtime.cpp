#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <thread>

#include "peft4j/runtime.h"
#include "peft4j_api.h"

// Debian's libtorch calls whichever libblas.so.3 the system selects; without OpenBLAS it is the
// reference BLAS, 36x slower. The core also raises libtorch's intra-op threads (1.13 defaults to 1).
TEST(Runtime, UsesOpenBlasAndAllCores) {
  std::string blas = peft4j::api::blasLibrary();  // runs a GEMM first, so BLAS is loaded
  EXPECT_NE(blas.find("openblas"), std::string::npos) << "loaded BLAS: '" << blas << "'";
  if (!std::getenv("PEFT4J_NUM_THREADS")) EXPECT_EQ(peft4j::api::numThreads(), peft4j::runtime::available_cores());
}

// Two calls in flight on two threads split the threads init() chose; alone again, a call gets them all back.
TEST(Runtime, ConcurrentCallsShareTheIntraOpThreads) {
#if !AT_PARALLEL_OPENMP
  GTEST_SKIP() << "libtorch without OpenMP has one process-wide pool, which needs no share";
#endif
  peft4j::runtime::init();
  const int all = peft4j::api::numThreads();
  std::promise<void> entered, release;
  std::thread other([&] {
    peft4j::runtime::ThreadShare share;
    entered.set_value();
    release.get_future().wait();
  });
  entered.get_future().wait();
  {
    peft4j::runtime::ThreadShare share;
    EXPECT_EQ(at::get_num_threads(), std::max(1, all / 2));
    {
      peft4j::runtime::ThreadShare nested;  // the same call going deeper: still one of two
      EXPECT_EQ(at::get_num_threads(), std::max(1, all / 2));
    }
  }
  release.set_value();
  other.join();
  EXPECT_EQ(peft4j::api::numThreads(), all);
}
