// The three CUDA backends behind the Backend interface: cuda_flash (the fused tensor-core
// kernel), cuda_unfused (cuBLAS QK^T, a softmax kernel, cuBLAS PV: the textbook baseline) and
// cuda_reference (a plain float32 kernel that checks the others at sizes the CPU is too slow
// for). cuda_unfused and cuda_reference also run PHASE_BACKWARD, timed alone after an untimed
// forward or as a training step. They share one workload: inputs resident on the device, CUDA
// events around each iteration, the L2 flushed and the input copy rotated before it, optional
// CUDA-graph replay.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_

#include <memory>
#include <vector>

#include "kernels/backend.h"

namespace attnbench {

inline constexpr char kCudaFlashBackend[] = "cuda_flash";
inline constexpr char kCudaUnfusedBackend[] = "cuda_unfused";
inline constexpr char kCudaReferenceBackend[] = "cuda_reference";

// The three backends when this machine has a CUDA device; none otherwise.
std::vector<std::unique_ptr<Backend>> MakeCudaBackends();

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_BACKEND_H_
