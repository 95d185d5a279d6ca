// The host CPU as a device: its description (model name, hardware threads, memory), ceilings
// measured once per process (float32 matmul rate on all threads, memcpy bandwidth; under 200 ms
// together), and a last-level-cache flush for cold timings.
#ifndef ATTNBENCH_KERNELS_CPU_DEVICE_H_
#define ATTNBENCH_KERNELS_CPU_DEVICE_H_

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace attnbench {

// Described and measured on the first call; later calls return the same value.
DeviceDescription CpuDevice();

// Bytes of the last-level cache (sysconf, then /sys), 64 MiB when neither says.
uint64_t LastLevelCacheBytes();

// Writes over a buffer twice the size of the last-level cache, evicting what a run left there.
class CacheFlusher {
 public:
  // The buffer is allocated on the first Flush.
  void Flush();
  static uint64_t BufferBytes() { return 2 * LastLevelCacheBytes(); }

 private:
  std::vector<unsigned char> buffer_;
  unsigned char value_ = 0;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_DEVICE_H_
