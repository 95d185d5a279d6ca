// Tensors between the host's FloatTensor and device memory in a storage type: gradients and
// outputs start as NaN on the device (so an element a kernel fails to write cannot pass a check)
// and come back as the float values of their dtype.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_TENSOR_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_TENSOR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench::cuda {

// `bytes` of device memory filled with NaN (0xFF bytes: NaN in float32, float16 and bfloat16
// alike), the fill finished before it returns.
absl::StatusOr<DeviceBuffer> AllocateNaN(uint64_t bytes, const std::string& what);

// The tensor of `shape` stored in `dtype` at `data` on the current device, as float values.
absl::StatusOr<FloatTensor> DownloadTensor(const void* data, const Shape& shape, DType dtype);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_TENSOR_H_
