// CUDA and cuBLAS results as absl::Status, so host code reports GPU failures with the call named
// and the right code: out of memory is RESOURCE_EXHAUSTED (a client may retry smaller), anything
// else INTERNAL. Clears the runtime's last (non-sticky) error so the next request starts clean.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_STATUS_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnbench::cuda {

absl::Status CudaStatus(cudaError_t error, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t status, absl::string_view what);

}  // namespace attnbench::cuda

// Returns from the enclosing function (absl::Status or StatusOr) when the CUDA call fails.
#define ATTNBENCH_CUDA_RETURN_IF_ERROR(call)                                      \
  do {                                                                            \
    if (const cudaError_t attnbench_err = (call); attnbench_err != cudaSuccess) { \
      return ::attnbench::cuda::CudaStatus(attnbench_err, #call);                 \
    }                                                                             \
  } while (0)

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_STATUS_H_
