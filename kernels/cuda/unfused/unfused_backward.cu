// Kernels of the unfused (cuBLAS) backward: the per-chunk pointer arrays its batched GEMMs read,
// the softmax's backward between the GEMMs (P and dS from the recomputed scores, the forward's
// log-sum-exp and dP, with the mask and the modifiers' derivatives from the shared device
// helpers, so it agrees with every other backend), and the gradients' way out of their float32
// accumulators (RoPE's transpose, rounding to the storage type). Declared in unfused_kernels.h;
// unfused_backward.cc drives them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/score_grads.cuh"
#include "kernels/cuda/unfused/row_reduce.cuh"
#include "kernels/cuda/unfused/unfused_kernels.h"

namespace attnbench::cuda {
namespace {

constexpr int kElementwiseThreads = 256;
constexpr int kPointerThreads = 128;
constexpr int64_t kMaxGridX = 2147483647;

unsigned int GridFor(int64_t items, int threads) {
  return static_cast<unsigned int>(std::min((items + threads - 1) / threads, kMaxGridX));
}

int32_t ElementBytes(Storage storage) { return storage == Storage::kFloat32 ? 4 : 2; }

// ---- pointer arrays ---------------------------------------------------------------------------

// Thread p fills entry p of every array (see LaunchUnfusedBackwardPointers), from the head map on
// the device, so any map (GQKVA, explicit) needs no host round trip.
__global__ void BackwardPointersKernel(const __grid_constant__ AttentionArgs a, const char* q,
                                       const char* k, const char* grad_out, float* dq, float* dk,
                                       float* dv, int32_t element_bytes, const int32_t* round_heads,
                                       int32_t round_size, int64_t entry0, int32_t entries,
                                       int64_t row0, int32_t rows, float* scores,
                                       float* score_grads, void** ptrs, int64_t* pair_ids,
                                       int64_t ptr_stride) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= entries) return;
  const int64_t entry = entry0 + p;
  const int b = static_cast<int>(entry / round_size);
  const int h = round_heads[entry % round_size];
  const int qh = a.head_map[2 * h];
  const int kh = a.head_map[2 * h + 1];
  const char* v = static_cast<const char*>(a.v);
  const int64_t q_row = RowOffset(b, a.seq_q, row0, a.heads_q, qh, a.dim_qk);
  const int64_t k_row = RowOffset(b, a.seq_kv, 0, a.heads_kv, kh, a.dim_qk);
  const int64_t v_row = RowOffset(b, a.seq_kv, 0, a.heads_kv, kh, a.dim_v);
  ptrs[kBwdQ * ptr_stride + p] = const_cast<char*>(q + q_row * element_bytes);
  ptrs[kBwdK * ptr_stride + p] = const_cast<char*>(k + k_row * element_bytes);
  ptrs[kBwdV * ptr_stride + p] = const_cast<char*>(v + v_row * element_bytes);
  ptrs[kBwdGradOut * ptr_stride + p] = const_cast<char*>(
      grad_out + RowOffset(b, a.seq_q, row0, a.heads_out, h, a.dim_v) * element_bytes);
  ptrs[kBwdScores * ptr_stride + p] = scores + static_cast<int64_t>(p) * rows * a.seq_kv;
  ptrs[kBwdScoreGrads * ptr_stride + p] = score_grads + static_cast<int64_t>(p) * rows * a.seq_kv;
  ptrs[kBwdDq * ptr_stride + p] = dq + q_row;
  ptrs[kBwdDk * ptr_stride + p] = dk + k_row;
  ptrs[kBwdDv * ptr_stride + p] = dv + v_row;
  pair_ids[p] = static_cast<int64_t>(b) * a.heads_out + h;
}

// ---- the softmax's backward -------------------------------------------------------------------

// One block per (entry, query row), grid-stride over entries * rows rows. Two passes over the
// row: D = sum_j P_j dP_j, then P and dS written over the row in the storage type. P and dS come
// from the float32 score t as the forward's did (ModifyScore after the GEMM's scale, the mask from
// MaskKeeps), P = exp(s - lse) with the forward's log-sum-exp.
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    ScoreGradsKernel(const __grid_constant__ AttentionArgs a, const float* lse, float* row_terms,
                     float* scores, float* score_grads, const int64_t* pair_ids, int64_t row0,
                     int32_t rows, int64_t total_rows) {
  __shared__ float partial[kRowWarps];
  const int64_t n = a.seq_kv;
  for (int64_t r = blockIdx.x; r < total_rows; r += gridDim.x) {
    const int64_t pair = pair_ids[r / rows];
    const int b = static_cast<int>(pair / a.heads_out);
    const int h = static_cast<int>(pair % a.heads_out);
    const int64_t i = row0 + r % rows;
    const int64_t stat = pair * a.seq_q + i;
    const float row_lse = lse[stat];
    // -inf only when every key is hidden: every P and dS of the row is then 0.
    const bool any_kept = row_lse != -INFINITY;
    float* s = scores + r * n;
    float* dp = score_grads + r * n;

    float thread_sum = 0.0f;
    if (any_kept) {
      for (int64_t j = threadIdx.x; j < n; j += kRowThreads) {
        if (!MaskKeeps(a, b, h, i, j)) continue;
        thread_sum += expf(ModifyScore(a, h, i, j, s[j]) - row_lse) * dp[j];
      }
    }
    const float row_term = BlockSum(thread_sum, partial);
    if (threadIdx.x == 0) row_terms[stat] = row_term;

    // P[j] and dS[j] (sizeof(T) <= 4 bytes) overlap the bytes of the float rows with index <= j:
    // writing a slice of kRowThreads entries after every thread has read that slice (the
    // barrier) never clobbers a value still to be read.
    T* p_out = reinterpret_cast<T*>(s);
    T* ds_out = reinterpret_cast<T*>(dp);
    for (int64_t j0 = 0; j0 < n; j0 += kRowThreads) {
      const int64_t j = j0 + threadIdx.x;
      float p = 0.0f;
      float ds = 0.0f;
      if (j < n && any_kept && MaskKeeps(a, b, h, i, j)) {
        const float modified = ModifyScore(a, h, i, j, s[j]);
        p = expf(modified - row_lse);
        ds = p * (dp[j] - row_term) * ModifiedScoreSlope(a, modified);
      }
      __syncthreads();
      if (j < n) {
        p_out[j] = FromFloat<T>(p);
        ds_out[j] = FromFloat<T>(ds);
      }
    }
    __syncthreads();  // partial and the row's last slice are done before the next row
  }
}

template <typename T>
cudaError_t LaunchScoreGrads(const AttentionArgs& a, const float* lse, float* row_terms,
                             float* scores, float* score_grads, const int64_t* pair_ids,
                             int32_t entries, int64_t row0, int32_t rows, cudaStream_t stream) {
  const int64_t total_rows = static_cast<int64_t>(entries) * rows;
  if (total_rows == 0) return cudaSuccess;
  const unsigned int grid = static_cast<unsigned int>(std::min(total_rows, kMaxGridX));
  ScoreGradsKernel<T><<<grid, kRowThreads, 0, stream>>>(a, lse, row_terms, scores, score_grads,
                                                        pair_ids, row0, rows, total_rows);
  return cudaGetLastError();
}

// ---- gradients out ----------------------------------------------------------------------------

// out[e] = the float32 accumulator's element e in the storage type; with `rotate` through RoPE's
// transpose at the position of e's token (token s of `seq` at s + pos_offset), which reads the
// element's rotation partner in the same row. One element per thread, grid-stride.
template <typename T>
__global__ void GradientOutKernel(const __grid_constant__ AttentionArgs a, const float* acc, T* out,
                                  int64_t seq, int32_t heads, int32_t dim, int64_t pos_offset,
                                  bool rotate, int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % dim);
    const int64_t s = (e / (static_cast<int64_t>(dim) * heads)) % seq;
    const float x = rotate ? RopeTransposedElement(a, acc + (e - d), s + pos_offset, d) : acc[e];
    out[e] = FromFloat<T>(x);
  }
}

template <typename T>
cudaError_t LaunchGradientOut(const AttentionArgs& a, const float* acc, void* out, int64_t seq,
                              int32_t heads, int32_t dim, int64_t pos_offset, bool rotate,
                              cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(a.batch) * seq * heads * dim;
  if (n <= 0) return cudaSuccess;
  GradientOutKernel<T><<<GridFor(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      a, acc, static_cast<T*>(out), seq, heads, dim, pos_offset, rotate, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchGradientsOut(const AttentionArgs& a, const float* dq, const float* dk,
                               const float* dv, void* dq_out, void* dk_out, void* dv_out,
                               cudaStream_t stream) {
  const bool rope = a.rope_cos_sin != nullptr;
  if (cudaError_t e =
          LaunchGradientOut<T>(a, dq, dq_out, a.seq_q, a.heads_q, a.dim_qk, a.offset, rope, stream);
      e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e =
          LaunchGradientOut<T>(a, dk, dk_out, a.seq_kv, a.heads_kv, a.dim_qk, 0, rope, stream);
      e != cudaSuccess) {
    return e;
  }
  return LaunchGradientOut<T>(a, dv, dv_out, a.seq_kv, a.heads_kv, a.dim_v, 0, false, stream);
}

}  // namespace

cudaError_t LaunchUnfusedBackwardPointers(const AttentionArgs& args, const void* q, const void* k,
                                          const void* grad_out, float* dq, float* dk, float* dv,
                                          const int32_t* round_heads, int32_t round_size,
                                          int64_t entry0, int32_t entries, int64_t row0,
                                          int32_t rows, float* scores, float* score_grads,
                                          void** ptrs, int64_t* pair_ids, int64_t ptr_stride,
                                          cudaStream_t stream) {
  if (entries <= 0) return cudaSuccess;
  if (entries > ptr_stride || round_size <= 0) return cudaErrorInvalidValue;
  BackwardPointersKernel<<<GridFor(entries, kPointerThreads), kPointerThreads, 0, stream>>>(
      args, static_cast<const char*>(q), static_cast<const char*>(k),
      static_cast<const char*>(grad_out), dq, dk, dv, ElementBytes(args.storage), round_heads,
      round_size, entry0, entries, row0, rows, scores, score_grads, ptrs, pair_ids, ptr_stride);
  return cudaGetLastError();
}

cudaError_t LaunchUnfusedScoreGrads(const AttentionArgs& args, const float* lse, float* row_terms,
                                    float* scores, float* score_grads, const int64_t* pair_ids,
                                    int32_t entries, int64_t row0, int32_t rows,
                                    cudaStream_t stream) {
  switch (args.storage) {
    case Storage::kFloat32:
      return LaunchScoreGrads<float>(args, lse, row_terms, scores, score_grads, pair_ids, entries,
                                     row0, rows, stream);
    case Storage::kFloat16:
      return LaunchScoreGrads<__half>(args, lse, row_terms, scores, score_grads, pair_ids, entries,
                                      row0, rows, stream);
    case Storage::kBFloat16:
      return LaunchScoreGrads<__nv_bfloat16>(args, lse, row_terms, scores, score_grads, pair_ids,
                                             entries, row0, rows, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchUnfusedGradientsOut(const AttentionArgs& args, const float* dq, const float* dk,
                                      const float* dv, void* dq_out, void* dk_out, void* dv_out,
                                      cudaStream_t stream) {
  switch (args.storage) {
    case Storage::kFloat32:
      return LaunchGradientsOut<float>(args, dq, dk, dv, dq_out, dk_out, dv_out, stream);
    case Storage::kFloat16:
      return LaunchGradientsOut<__half>(args, dq, dk, dv, dq_out, dk_out, dv_out, stream);
    case Storage::kBFloat16:
      return LaunchGradientsOut<__nv_bfloat16>(args, dq, dk, dv, dq_out, dk_out, dv_out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnbench::cuda
