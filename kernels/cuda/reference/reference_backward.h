// cuda_reference's backward (PHASE_BACKWARD, docs/variants.md §5): dQ, dK, dV in float32 math for
// every storage type, head map, mask and modifier, from Q, K, V (AttentionArgs), dO and what the
// forward kept (BackwardArgs: O before rounding and the log-sum-exp, written by
// LaunchReferenceAttentionSaving). Plain and deterministic rather than fast; the .cu says how.
// Enqueues on `stream` and returns the first launch error.
#ifndef ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_BACKWARD_H_
#define ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_BACKWARD_H_

#include <cuda_runtime.h>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"

namespace attnbench::cuda {

cudaError_t LaunchReferenceBackward(const AttentionArgs& args, const BackwardArgs& grads,
                                    cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_BACKWARD_H_
