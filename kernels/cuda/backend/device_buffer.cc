#include "kernels/cuda/backend/device_buffer.h"

#include <cuda_runtime.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"

namespace attnbench::cuda {

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(uint64_t bytes, const std::string& what) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t err = cudaMalloc(&buffer.ptr_, bytes);
  if (err != cudaSuccess) {
    buffer.ptr_ = nullptr;
    return CudaStatus(err, absl::StrCat("cudaMalloc of ", bytes, " bytes for ", what));
  }
  buffer.bytes_ = bytes;
  return buffer;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Upload(const void* data, uint64_t bytes,
                                                  const std::string& what) {
  absl::StatusOr<DeviceBuffer> buffer = Allocate(bytes, what);
  if (!buffer.ok() || bytes == 0) return buffer;
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer->get(), data, bytes, cudaMemcpyHostToDevice));
  return buffer;
}

}  // namespace attnbench::cuda
