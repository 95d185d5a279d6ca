// Owned device memory: one cudaMalloc'd block freed with its owner, so every early return of a
// failed Prepare releases what it took and the device stays usable for the next request.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BUFFER_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BUFFER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace attnbench::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // RESOURCE_EXHAUSTED naming `what` and the size when the device is out of memory.
  static absl::StatusOr<DeviceBuffer> Allocate(uint64_t bytes, const std::string& what);
  // Allocates and copies `bytes` bytes from host memory.
  static absl::StatusOr<DeviceBuffer> Upload(const void* data, uint64_t bytes,
                                             const std::string& what);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  uint64_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BUFFER_H_
