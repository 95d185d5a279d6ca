// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): the
// counter-based generator behind generated inputs (§8), random page tables and probabilistic
// block masks. A pure function of (counter, key), so every backend and any client language draws
// the same numbers without sharing state.
#ifndef ATTNBENCH_KERNELS_SPEC_PHILOX_H_
#define ATTNBENCH_KERNELS_SPEC_PHILOX_H_

#include <array>
#include <cstdint>

namespace attnbench {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds with the standard multipliers 0xD2511F53, 0xCD9E8D57 and key increments 0x9E3779B9,
// 0xBB67AE85; matches the Random123 reference implementation word for word.
PhiloxCounter Philox4x32_10(const PhiloxCounter& counter, const PhiloxKey& key);

// The key a 64-bit seed stands for: (seed & 0xffffffff, seed >> 32).
inline PhiloxKey PhiloxKeyFromSeed(uint64_t seed) {
  return {static_cast<uint32_t>(seed & 0xffffffffu), static_cast<uint32_t>(seed >> 32)};
}

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_PHILOX_H_
