// Seeded samples of rows for the correctness checks: which rows of a tensor too large to compare
// whole are compared, the same on every run of the same seed.
#ifndef ATTNBENCH_KERNELS_REFERENCE_ROW_SAMPLE_H_
#define ATTNBENCH_KERNELS_REFERENCE_ROW_SAMPLE_H_

#include <cstdint>
#include <vector>

namespace attnbench {

// Philox counter words that keep the checks' samples apart from every other stream of a seed.
inline constexpr uint32_t kOutputRowStream = 0x63686b00u;     // "chk": rows of O
inline constexpr uint32_t kQueryGradRowStream = 0x63686b01u;  // rows of dQ
inline constexpr uint32_t kKvGroupStream = 0x63686b02u;       // (batch, kv head) groups of dK, dV

// `count` distinct values of [0, total) (count <= total), by Floyd's algorithm (no O(total)
// memory), drawn from Philox4x32-10((t, t >> 32, stream, 0), seed) for t in [total - count,
// total); unordered.
std::vector<int64_t> SampleRows(int64_t total, int64_t count, uint64_t seed, uint32_t stream);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_ROW_SAMPLE_H_
