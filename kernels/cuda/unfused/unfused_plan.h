// What the unfused forward (unfused_attention.cc) and backward (unfused_backward.cc) plan their
// scratch and cuBLAS calls with: alignment, the chunk bound, RoPE on/off from either kind of args,
// element sizes and cuBLAS types of the storage. Host code only.
#ifndef ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_PLAN_H_
#define ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_PLAN_H_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/cublas_type.h"
#include "kernels/cuda/unfused/unfused_kernels.h"

namespace attnbench::cuda::unfused {

// Scratch regions start on 256 bytes, the alignment cudaMalloc gives and cuBLAS likes.
inline constexpr uint64_t kAlignment = 256;
// Batch counts above the grid's y/z limit have failed in some cuBLAS versions; more pairs than
// this simply take more chunks.
inline constexpr int64_t kMaxPairsPerChunk = 65535;

inline uint64_t AlignUp(uint64_t bytes) {
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

// RoPE is on when either the table (device args) or rope_dims (ShapeArgs, which has no device
// pointers) says so, so a plan comes out the same from either.
inline bool RopeOn(const AttentionArgs& a) { return a.rope_cos_sin != nullptr || a.rope_dims > 0; }

inline uint64_t ElementBytes(Storage storage) { return storage == Storage::kFloat32 ? 4 : 2; }

using cuda::CublasType;

// The Q and K the GEMMs read: args.q and args.k, or with RoPE on their rotated copies, written
// into `q_rope` and `k_rope` (scratch the plan sized) on `stream` first.
inline cudaError_t GemmOperands(const AttentionArgs& args, void* q_rope, void* k_rope,
                                cudaStream_t stream, const void** q, const void** k) {
  *q = args.q;
  *k = args.k;
  if (!RopeOn(args)) return cudaSuccess;
  *q = q_rope;
  *k = k_rope;
  return LaunchUnfusedRope(args, q_rope, k_rope, stream);
}

}  // namespace attnbench::cuda::unfused

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_PLAN_H_
