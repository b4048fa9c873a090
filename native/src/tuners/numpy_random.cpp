#include "peft4j/tuners/numpy_random.h"

#include <algorithm>
#include <array>
#include <limits>

namespace peft4j::tuners {

namespace {

// SeedSequence's hashing constants (numpy/random/bit_generator.pyx).
constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875, kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd, kMixMultR = 0x4973f715;
constexpr int kXShift = 16;
constexpr size_t kPoolSize = 4;

uint32_t hashmix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;
  value *= hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}

// SeedSequence(seed).generate_state(n_words, uint32).
std::vector<uint32_t> seed_sequence_state(uint64_t seed, size_t n_words) {
  std::vector<uint32_t> entropy = {static_cast<uint32_t>(seed)};
  if (seed >> 32) entropy.push_back(static_cast<uint32_t>(seed >> 32));
  std::array<uint32_t, kPoolSize> pool{};
  uint32_t hash_const = kInitA;
  for (size_t i = 0; i < kPoolSize; ++i) pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0, hash_const);
  for (size_t src = 0; src < kPoolSize; ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hash_const));
  for (size_t src = kPoolSize; src < entropy.size(); ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst) pool[dst] = mix(pool[dst], hashmix(entropy[src], hash_const));
  std::vector<uint32_t> out(n_words);
  uint32_t hash_b = kInitB;
  for (size_t i = 0; i < n_words; ++i) {
    uint32_t value = pool[i % kPoolSize];
    value ^= hash_b;
    hash_b *= kMultB;
    value *= hash_b;
    value ^= value >> kXShift;
    out[i] = value;
  }
  return out;
}

constexpr unsigned __int128 kPcgMultiplier =
    (static_cast<unsigned __int128>(2549297995355413924ULL) << 64) | 4865540595714422341ULL;

// The smallest 2^k - 1 that is >= max.
uint64_t mask_for(uint64_t max) {
  uint64_t mask = max;
  for (int shift = 1; shift <= 32; shift *= 2) mask |= mask >> shift;
  return mask;
}

}  // namespace

NumpyGenerator::NumpyGenerator(uint64_t seed) {
  // PCG64.__init__: four uint64 words (little-endian pairs of uint32) give the 128-bit state and increment.
  std::vector<uint32_t> words = seed_sequence_state(seed, 8);
  uint64_t w[4];
  for (int i = 0; i < 4; ++i) w[i] = static_cast<uint64_t>(words[2 * i]) | (static_cast<uint64_t>(words[2 * i + 1]) << 32);
  const unsigned __int128 initial = (static_cast<unsigned __int128>(w[0]) << 64) | w[1];
  const unsigned __int128 sequence = (static_cast<unsigned __int128>(w[2]) << 64) | w[3];
  // pcg_setseq_128_srandom_r
  increment_ = (sequence << 1) | 1;
  state_ = 0;
  state_ = state_ * kPcgMultiplier + increment_;
  state_ += initial;
  state_ = state_ * kPcgMultiplier + increment_;
}

uint64_t NumpyGenerator::next_uint64() {
  state_ = state_ * kPcgMultiplier + increment_;
  const uint64_t value = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  const unsigned rotation = static_cast<unsigned>(state_ >> 122);
  return (value >> rotation) | (value << ((64 - rotation) & 63));
}

uint32_t NumpyGenerator::next_uint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t next = next_uint64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next);
}

uint64_t NumpyGenerator::bounded(uint64_t max) {
  if (max == 0) return 0;
  if (max <= std::numeric_limits<uint32_t>::max()) {
    if (max == std::numeric_limits<uint32_t>::max()) return next_uint32();
    const uint32_t excl = static_cast<uint32_t>(max) + 1;
    uint64_t m = static_cast<uint64_t>(next_uint32()) * excl;
    uint32_t leftover = static_cast<uint32_t>(m);
    if (leftover < excl) {
      const uint32_t threshold = (std::numeric_limits<uint32_t>::max() - static_cast<uint32_t>(max)) % excl;
      while (leftover < threshold) {
        m = static_cast<uint64_t>(next_uint32()) * excl;
        leftover = static_cast<uint32_t>(m);
      }
    }
    return m >> 32;
  }
  if (max == std::numeric_limits<uint64_t>::max()) return next_uint64();
  const uint64_t excl = max + 1;
  unsigned __int128 m = static_cast<unsigned __int128>(next_uint64()) * excl;
  uint64_t leftover = static_cast<uint64_t>(m);
  if (leftover < excl) {
    const uint64_t threshold = (std::numeric_limits<uint64_t>::max() - max) % excl;
    while (leftover < threshold) {
      m = static_cast<unsigned __int128>(next_uint64()) * excl;
      leftover = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

uint64_t NumpyGenerator::interval(uint64_t max) {
  if (max == 0) return 0;
  const uint64_t mask = mask_for(max);
  uint64_t value;
  if (max <= std::numeric_limits<uint32_t>::max()) {
    while ((value = (next_uint32() & mask)) > max) {
    }
  } else {
    while ((value = (next_uint64() & mask)) > max) {
    }
  }
  return value;
}

void NumpyGenerator::shuffle_tail(std::vector<int64_t>& data, int64_t first) {
  for (int64_t i = static_cast<int64_t>(data.size()) - 1; i >= first; --i)
    std::swap(data[i], data[bounded(static_cast<uint64_t>(i))]);
}

std::vector<int64_t> NumpyGenerator::choice_without_replacement(int64_t population, int64_t size) {
  if (size <= 0) return {};
  if (population > 10000 && size > population / 50) {
    // Tail shuffle: the last `size` entries of a partly shuffled arange.
    std::vector<int64_t> all(population);
    for (int64_t i = 0; i < population; ++i) all[i] = i;
    shuffle_tail(all, std::max<int64_t>(population - size, 1));
    return std::vector<int64_t>(all.end() - size, all.end());
  }
  // Floyd's algorithm with an open-addressing set, then a shuffle of the sample.
  const uint64_t mask = mask_for(static_cast<uint64_t>(1.2 * static_cast<double>(size)));
  const uint64_t empty = std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> set(mask + 1, empty);
  std::vector<int64_t> out(size);
  for (int64_t j = population - size; j < population; ++j) {
    const uint64_t value = bounded(static_cast<uint64_t>(j));
    uint64_t loc = value & mask;
    while (set[loc] != empty && set[loc] != value) loc = (loc + 1) & mask;
    if (set[loc] == empty) {
      set[loc] = value;
      out[j - population + size] = static_cast<int64_t>(value);
    } else {
      loc = static_cast<uint64_t>(j) & mask;
      while (set[loc] != empty) loc = (loc + 1) & mask;
      set[loc] = static_cast<uint64_t>(j);
      out[j - population + size] = j;
    }
  }
  shuffle_tail(out, 1);
  return out;
}

void NumpyGenerator::shuffle(std::vector<int64_t>& data) {
  for (int64_t i = static_cast<int64_t>(data.size()) - 1; i >= 1; --i)
    std::swap(data[i], data[interval(static_cast<uint64_t>(i))]);
}

}  // namespace peft4j::tuners
