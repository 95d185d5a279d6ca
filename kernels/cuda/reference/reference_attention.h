// cuda_reference's kernel: one query row at a time in float32, every storage type, every mask and
// modifier. Simple and obviously right; the fast paths are checked against it at sizes the CPU
// reference cannot reach. Enqueues on `stream` and returns the launch status.
#ifndef ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_
#define ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_

#include <cuda_runtime.h>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/kv_cache_args.h"

namespace attnbench::cuda {

cudaError_t LaunchReferenceAttention(const AttentionArgs& args, cudaStream_t stream);

// The same forward keeping what a backward starts from (BackwardArgs::out and ::lse): O in
// float32 before its rounding, [B, S_q, H_out, D_v], and each row's log-sum-exp [B, H_out, S_q].
cudaError_t LaunchReferenceAttentionSaving(const AttentionArgs& args, float* saved_out,
                                           float* saved_lse, cudaStream_t stream);

// The forward of a decode problem whose keys and values come from a paged or quantized cache
// (cache.page_table set; args.k and args.v are not read, the cache's keys are already rotated).
cudaError_t LaunchReferenceAttentionFromCache(const AttentionArgs& args, const KvCacheArgs& cache,
                                              cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_REFERENCE_REFERENCE_ATTENTION_H_
