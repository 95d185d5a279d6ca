// The cuda_unfused backend's computation: textbook attention as two cuBLAS GEMMs around a row
// softmax (S = scale Q K^T in float32, P = softmax(mask(modifiers(S))) in the storage type,
// O = P V), the baseline users compare fused kernels against. It materializes the full
// S_q x S_kv scores (no tile skipping), chunked over (b, h) pairs and query rows so the score
// buffer stays under a caller-chosen size.
#ifndef ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_ATTENTION_H_
#define ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_ATTENTION_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/expr/device_expressions.h"

namespace attnbench::cuda {

class UnfusedAttention {
 public:
  // Device scratch bytes a run needs: float32 scores for a chunk of (b, h) pairs and query rows
  // sized so one chunk stays under max_scratch_bytes (at least one (b, h, 1 query row) chunk),
  // plus the chunk's GEMM pointer arrays, plus RoPE'd copies of Q and K when RoPE is on
  // (args.rope_cos_sin set or args.rope_dims > 0). Depends only on shapes, storage, RoPE on/off
  // and max_scratch_bytes, so shape-only args (ShapeArgs) give the same answer as device args.
  static uint64_t ScratchBytes(const AttentionArgs& args, uint64_t max_scratch_bytes);

  // Runs O = softmax(mask(modifiers(scale Q K^T))) V on `stream` using `handle` (already bound to
  // `stream` by the caller; its pointer mode is set to host) and `scratch` (device memory, at
  // least ScratchBytes(args, max_scratch_bytes) bytes, 256-byte aligned as cudaMalloc returns).
  // Allocates nothing and does not synchronize. Errors: cuBLAS and CUDA failures INTERNAL (out
  // of memory RESOURCE_EXHAUSTED) with the call named; unsupported input FAILED_PRECONDITION;
  // missing device pointers or tables, or scratch smaller than ScratchBytes, INVALID_ARGUMENT.
  // `expressions`, when the problem has a score_mod or mask_mod (else null), applies them to each
  // chunk's scores after the built-in modifiers and before the softmax's mask (variants.md §4b):
  // then ALiBi and softcap run as a pass of their own ahead of the score_mod, not inside the
  // softmax, so the order is the spec's with every combination.
  // `lse`, when not null (the forward a backward starts from: unfused_backward.h), receives each
  // row's log-sum-exp as BackwardArgs::lse lays it out, [B, H_out, S_q].
  static absl::Status Run(const AttentionArgs& args, cublasHandle_t handle, void* scratch,
                          uint64_t scratch_bytes, uint64_t max_scratch_bytes, cudaStream_t stream,
                          const DeviceExpressions* expressions = nullptr, float* lse = nullptr);

  // Empty when supported, else why not (an unknown storage type such as a future float8, sizes
  // past cuBLAS's 32-bit dimensions). Reads shapes only: device pointers may be null.
  static std::string UnsupportedReason(const AttentionArgs& args);
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_ATTENTION_H_
