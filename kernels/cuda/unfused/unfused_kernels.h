// The small CUDA kernels of the unfused (cuBLAS) attention baseline: the forward's in
// unfused_softmax.cu (the RoPE pre-pass, the per-chunk cuBLAS pointer arrays and the row
// softmax), the backward's in unfused_backward.cu (its pointer arrays, the score gradients dS and
// the gradients' way out of their float32 accumulators). Plain CUDA runtime types only, so
// unfused_attention.cc and unfused_backward.cc (host files with Abseil) include it without nvcc
// seeing Abseil. Each enqueues on `stream` and returns the launch status.
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
// every key hidden become all zeros. With `lse` (the forward a backward starts from), each row's
// natural-log log-sum-exp of its kept scores goes to lse[(b * H_out + h) * S_q + i] (-inf for a
// row with every key hidden), BackwardArgs::lse's layout.
cudaError_t LaunchUnfusedSoftmax(const AttentionArgs& args, float* scores, int64_t pair0,
                                 int32_t pairs, int64_t row0, int32_t rows, cudaStream_t stream,
                                 float* lse = nullptr);

// ---- backward (unfused_backward.cc drives these) -----------------------------------------------

// The pointer arrays of one backward chunk: entries entry0 .. entry0 + entries - 1 of a round of
// `round_size` output heads (round_heads, device memory), entry e being batch e / round_size and
// output head h = round_heads[e % round_size], and query rows row0 .. row0 + rows - 1. Fills
// kUnfusedBackwardPointerArrays arrays of `ptr_stride` entries each (as LaunchUnfusedPointers)
// and pair_ids[p] = b * H_out + h for entry p of the chunk:
//   kBwdQ: q at (b, row0, qh(h))        kBwdK: k at (b, 0, kh(h))      kBwdV: args.v at (b, 0, kh)
//   kBwdGradOut: grad_out at (b, row0, h)
//   kBwdScores, kBwdScoreGrads: scores and score_grads + p * rows * S_kv (float32 S and dP, later
//     P and dS in the storage type, in place)
//   kBwdDq: dq at (b, row0, qh)         kBwdDk: dk at (b, 0, kh)       kBwdDv: dv at (b, 0, kh)
// q and k are the tensors the GEMMs read (args.q/args.k, or their RoPE'd copies); dq, dk, dv the
// float32 accumulators, BSHD like Q, K and V.
enum UnfusedBackwardPointerArray {
  kBwdQ = 0,
  kBwdK,
  kBwdV,
  kBwdGradOut,
  kBwdScores,
  kBwdScoreGrads,
  kBwdDq,
  kBwdDk,
  kBwdDv,
  kUnfusedBackwardPointerArrays
};
cudaError_t LaunchUnfusedBackwardPointers(const AttentionArgs& args, const void* q, const void* k,
                                          const void* grad_out, float* dq, float* dk, float* dv,
                                          const int32_t* round_heads, int32_t round_size,
                                          int64_t entry0, int32_t entries, int64_t row0,
                                          int32_t rows, float* scores, float* score_grads,
                                          void** ptrs, int64_t* pair_ids, int64_t ptr_stride,
                                          cudaStream_t stream);

// The softmax's backward on a chunk laid out as LaunchUnfusedBackwardPointers says, one block per
// (entry, query row): with t the float32 score (scale <q', k'>) and s = ModifyScore(t) for a kept
// pair, P = exp(s - lse), D = sum_j P dP (written to row_terms[(b * H_out + h) * S_q + i]) and
// dS = P (dP - D) ds/dt (the softcap's slope); hidden pairs get P = dS = 0. P overwrites the
// scores and dS the dP values in the storage type, each row starting where its float32 row does
// (leading dimension S_kv * 4 / sizeof(storage), as the forward's P).
cudaError_t LaunchUnfusedScoreGrads(const AttentionArgs& args, const float* lse, float* row_terms,
                                    float* scores, float* score_grads, const int64_t* pair_ids,
                                    int32_t entries, int64_t row0, int32_t rows,
                                    cudaStream_t stream);

// The gradients out of their float32 accumulators (BSHD like Q, K, V) into the storage type: dQ
// and dK through RoPE's transpose (queries at i' = i + offset, keys at j) when RoPE is on, dV as
// it is.
cudaError_t LaunchUnfusedGradientsOut(const AttentionArgs& args, const float* dq, const float* dk,
                                      const float* dv, void* dq_out, void* dk_out, void* dv_out,
                                      cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_KERNELS_H_
