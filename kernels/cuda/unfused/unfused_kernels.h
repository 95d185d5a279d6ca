// The small CUDA kernels of the unfused (cuBLAS) attention baseline, implemented in
// unfused_softmax.cu: the RoPE pre-pass, the per-chunk cuBLAS pointer arrays and the row softmax.
// Plain CUDA runtime types only, so unfused_attention.cc (a host file with Abseil) includes it
// without nvcc seeing Abseil. Each enqueues on `stream` and returns the launch status.
#ifndef ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_KERNELS_H_
#define ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

// Writes args.q and args.k rotated by RoPE (queries at i' = i + offset, keys at j) into q_out
// and k_out, same BSHD layout and storage type. args.rope_cos_sin must be set.
cudaError_t LaunchUnfusedRope(const AttentionArgs& args, void* q_out, void* k_out,
                              cudaStream_t stream);

// The pointer arrays of one chunk: pairs (b, h) = pair0 .. pair0 + pairs - 1 (pair = b * H_out +
// h) and query rows row0 .. row0 + rows - 1. Fills `ptrs` as kUnfusedPointerArrays arrays of
// `ptr_stride` entries each (entry p of array a at ptrs[a * ptr_stride + p]):
//   kPtrK: K of pair p at (b, 0, kh(h))      kPtrQ: Q at (b, row0, qh(h))
//   kPtrScores: scores + p * rows * S_kv (float32 scores, later the probabilities P in place)
//   kPtrV: V at (b, 0, kh(h))                kPtrO: args.o at (b, row0, h)
// q and k are the tensors the GEMMs read (args.q/args.k, or their RoPE'd copies).
enum UnfusedPointerArray { kPtrK = 0, kPtrQ, kPtrScores, kPtrV, kPtrO, kUnfusedPointerArrays };
cudaError_t LaunchUnfusedPointers(const AttentionArgs& args, const void* q, const void* k,
                                  int64_t pair0, int32_t pairs, int64_t row0, int32_t rows,
                                  float* scores, void** ptrs, int64_t ptr_stride,
                                  cudaStream_t stream);

// The built-in score modifiers (ALiBi, softcap: ModifyScore) applied in place to the chunk's
// scores, laid out as LaunchUnfusedPointers says. For client expressions, which come after the
// built-ins (docs/variants.md §4b): this pass, the score_mod and mask_mod kernels, then the
// softmax with the modifiers taken out of its args.
cudaError_t LaunchUnfusedModifiers(const AttentionArgs& args, float* scores, int64_t pair0,
                                   int32_t pairs, int64_t row0, int32_t rows, cudaStream_t stream);

// Row softmax over the chunk's scores (pairs * rows rows of S_kv float32, laid out as
// LaunchUnfusedPointers says, already multiplied by args.scale): applies ModifyScore and the mask,
// then overwrites each row in place with P in the storage type. P row r starts where score row r
// starts, so its leading dimension in storage elements is S_kv * 4 / sizeof(storage). Rows with
// every key hidden become all zeros.
cudaError_t LaunchUnfusedSoftmax(const AttentionArgs& args, float* scores, int64_t pair0,
                                 int32_t pairs, int64_t row0, int32_t rows, cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_KERNELS_H_
