#include "kernels/cuda/backend/device_tensor.h"

#include <cuda_runtime.h>

#include <utility>
#include <vector>

#include "kernels/cuda/backend/cuda_status.h"

namespace attnbench::cuda {

absl::StatusOr<DeviceBuffer> AllocateNaN(uint64_t bytes, const std::string& what) {
  absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(bytes, what);
  if (!b.ok()) return b.status();
  // cudaMemset may return before it runs, on the legacy stream that a workload's non-blocking
  // stream does not wait for: the device is synchronized so that no kernel can overtake it.
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemset(b->get(), 0xFF, bytes));
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return b;
}

absl::StatusOr<FloatTensor> DownloadTensor(const void* data, const Shape& shape, DType dtype) {
  std::string bytes(static_cast<uint64_t>(NumElements(shape)) * DTypeBytes(dtype), '\0');
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(bytes.data(), data, bytes.size(), cudaMemcpyDeviceToHost));
  absl::StatusOr<std::vector<float>> values = DecodeValues(bytes, dtype);
  if (!values.ok()) return values.status();
  FloatTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.values = *std::move(values);
  return t;
}

}  // namespace attnbench::cuda
