// Host helpers the kernel launchers share: device attributes cached per device (launches sit
// inside timed iterations, where repeated attribute queries would be host work on the hot path)
// and the 16-byte alignment test of the vector and bulk copies.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_LAUNCH_SUPPORT_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_LAUNCH_SUPPORT_H_

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>

namespace attnbench::cuda {

// The current device's attribute kAttr, queried once per device.
template <cudaDeviceAttr kAttr>
cudaError_t CachedDeviceAttribute(int* value) {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int>, kMaxDevices> cached{};  // value + 1; 0: not queried yet
  int device = 0;
  if (cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  if (device < kMaxDevices) {
    const int known = cached[device].load(std::memory_order_relaxed);
    if (known != 0) {
      *value = known - 1;
      return cudaSuccess;
    }
  }
  if (cudaError_t err = cudaDeviceGetAttribute(value, kAttr, device); err != cudaSuccess) {
    return err;
  }
  if (device < kMaxDevices) cached[device].store(*value + 1, std::memory_order_relaxed);
  return cudaSuccess;
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_LAUNCH_SUPPORT_H_
