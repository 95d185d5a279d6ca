// cuda_reference's kernel: one query row at a time in float32, every storage type, every mask and
// modifier. Simple and obviously right; the fast paths are checked against it at sizes the CPU
// reference cannot reach. Enqueues on `stream` and returns the launch status.
#ifndef ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_
#define ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_

#include <cuda_runtime.h>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

cudaError_t LaunchReferenceAttention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_
