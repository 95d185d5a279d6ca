#include "kernels/spec/philox.h"

namespace attnbench {

PhiloxCounter Philox4x32_10(const PhiloxCounter& counter, const PhiloxKey& key) {
  constexpr uint32_t kMul0 = 0xD2511F53u;
  constexpr uint32_t kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kBump0 = 0x9E3779B9u;
  constexpr uint32_t kBump1 = 0xBB67AE85u;
  PhiloxCounter x = counter;
  uint32_t k0 = key[0];
  uint32_t k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * x[0];
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * x[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32);
    const uint32_t lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32);
    const uint32_t lo1 = static_cast<uint32_t>(p1);
    x = {hi1 ^ x[1] ^ k0, lo1, hi0 ^ x[3] ^ k1, lo0};
    k0 += kBump0;
    k1 += kBump1;
  }
  return x;
}

}  // namespace attnbench
