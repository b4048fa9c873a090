// NumPy's np.random.default_rng(seed) and the Generator draws PEFT's UniLoRA makes with it (Generator.choice without
// replacement, Generator.shuffle), reproduced exactly: SeedSequence entropy mixing, the PCG64 bit generator (XSL-RR
// 128/64, 32-bit draws taken from halves of a 64-bit draw), Lemire's bounded draws for choice and the masked
// rejection draws (random_interval) for shuffle. Checked against NumPy 2.4 for both of choice's algorithms.
#pragma once

#include <cstdint>
#include <vector>

namespace peft4j::tuners {

class NumpyGenerator {
 public:
  // np.random.default_rng(seed) for a non-negative seed.
  explicit NumpyGenerator(uint64_t seed);

  uint64_t next_uint64();
  uint32_t next_uint32();
  // Generator.choice(population, size, replace=False): `size` distinct values of [0, population), in NumPy's order.
  std::vector<int64_t> choice_without_replacement(int64_t population, int64_t size);
  // Generator.shuffle of a one-dimensional array.
  void shuffle(std::vector<int64_t>& data);

 private:
  uint64_t bounded(uint64_t max);   // random_bounded_uint64(0, max): Lemire's method, uniform in [0, max]
  uint64_t interval(uint64_t max);  // random_interval(max): masked rejection, uniform in [0, max]
  void shuffle_tail(std::vector<int64_t>& data, int64_t first);  // _shuffle_int: positions n-1 down to first

  unsigned __int128 state_ = 0, increment_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

}  // namespace peft4j::tuners
