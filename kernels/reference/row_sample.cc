#include "kernels/reference/row_sample.h"

#include <unordered_set>

#include "kernels/spec/philox.h"

namespace attnbench {

std::vector<int64_t> SampleRows(int64_t total, int64_t count, uint64_t seed, uint32_t stream) {
  std::unordered_set<int64_t> chosen;
  std::vector<int64_t> rows;
  const PhiloxKey key = PhiloxKeyFromSeed(seed);
  for (int64_t t = total - count; t < total; ++t) {
    const uint64_t step = static_cast<uint64_t>(t);
    const PhiloxCounter w = Philox4x32_10(
        {static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), stream, 0u}, key);
    const uint64_t r = (static_cast<uint64_t>(w[1]) << 32) | w[0];
    int64_t pick = static_cast<int64_t>(r % (step + 1));
    if (!chosen.insert(pick).second) {
      pick = t;
      chosen.insert(pick);
    }
    rows.push_back(pick);
  }
  return rows;
}

}  // namespace attnbench
