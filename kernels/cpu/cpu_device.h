// The host CPU as a device: its description (model name, hardware threads, memory), ceilings
// measured once per process (float32 matmul rate on all threads, memcpy bandwidth; under 200 ms
// together), and a last-level-cache flush for cold timings.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_DEVICE_H_
#define ATTNBENCH_KERNELS_CPU_CPU_DEVICE_H_

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/stop_check.h"

namespace attnbench {

// Described and measured on the first call; later calls return the same value.
DeviceDescription CpuDevice();

// Bytes of the last-level cache (sysconf, then /sys), 64 MiB when neither says.
uint64_t LastLevelCacheBytes();

// Writes over a buffer larger than the last-level cache (by a quarter, at least 8 MiB),
// evicting what a run left there. The buffer is allocated on the first call and shared by the
// process; calls are serialized. Returns early once `stop` says so: where the reported L3 is
// hundreds of MiB, the first call (first touch of every page) takes seconds, and a cancelled
// run must not hold the device through it.
void FlushLastLevelCache(const StopCheck* stop = nullptr);
uint64_t FlushBufferBytes();

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_DEVICE_H_
