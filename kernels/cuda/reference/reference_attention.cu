// The cuda_reference kernel: attention computed one query row per thread block in float32, for
// every storage type, head map, mask and score modifier of docs/variants.md. It is what the fast
// CUDA paths are checked against at sizes the CPU reference cannot reach, so it favours being
// plainly correct over being fast: no tensor cores, no tile skipping, one online softmax.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/kv_cache.cuh"
#include "kernels/cuda/reference/reference_attention.h"

namespace attnbench::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Keys scored per pass. Scores of one chunk live in shared memory, so the kernel handles any
// S_kv with a fixed footprint.
constexpr int kChunk = 128;
// The largest x dimension of a grid; rows past it are reached by the grid-stride loop.
constexpr int64_t kMaxGridX = 2147483647;
// Dynamic shared memory a kernel may use without opting in.
constexpr size_t kDefaultSharedBytes = 48 * 1024;

// One block per (b, h, i) row, grid-stride over rows = B * H_out * S_q.
// Shared memory (floats): the RoPE'd query row [dim_qk], the unnormalized output [dim_v] and the
// scores of the current key chunk [kChunk]. m (running max) and l (running sum) are computed by
// every thread from the same shared values in the same order, so they are uniform across the
// block and the branches on them below are block-uniform (barriers inside them are safe).
// For a backward (non-null pointers) the kernel also keeps what the backward starts from: O in
// float32 before its rounding to T (saved_out, BSHD) and each row's log-sum-exp m + log l
// (saved_lse [B, H_out, S_q]; -inf for a row whose every key is hidden).
// With cache.page_table set (a paged or quantized decode cache) keys and values are read from the
// cache, whose keys are already rotated, instead of a.k and a.v.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    ReferenceAttentionKernel(const __grid_constant__ AttentionArgs a,
                             const __grid_constant__ KvCacheArgs cache, float* saved_out,
                             float* saved_lse) {
  extern __shared__ float shared[];
  float* q_s = shared;
  float* acc = q_s + a.dim_qk;  // thread t owns dims t, t + kThreads, ...
  float* p_s = acc + a.dim_v;

  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* o = static_cast<T*>(a.o);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t i = row % a.seq_q;
    const int64_t bh = row / a.seq_q;
    const int h = static_cast<int>(bh % a.heads_out);
    const int b = static_cast<int>(bh / a.heads_out);
    const int qh = a.head_map[2 * h];
    const int kh = a.head_map[2 * h + 1];
    const int64_t ip = i + a.offset;  // the query's absolute position (bottom-right aligned)

    const T* q_row = q + RowOffset(b, a.seq_q, i, a.heads_q, qh, a.dim_qk);
    for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) q_s[d] = RopedElement(a, q_row, ip, d);
    for (int d = threadIdx.x; d < a.dim_v; d += kThreads) acc[d] = 0.0f;
    __syncthreads();

    float m = -INFINITY;  // max score seen so far
    float l = 0.0f;       // sum of exp(score - m) so far
    for (int64_t j0 = 0; j0 < a.seq_kv; j0 += kChunk) {
      const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), a.seq_kv - j0));
      // Scores: a warp per key so the K row reads are coalesced across lanes.
      for (int t = warp; t < n; t += kWarps) {
        const int64_t j = j0 + t;
        float s = -INFINITY;
        if (MaskKeeps(a, b, h, i, j)) {  // warp-uniform: every lane has the same (i, j)
          float dot = 0.0f;
          if (cache.page_table != nullptr) {
            const CacheRow r = LocateCacheRow(cache, b, j, kh);
            for (int d = lane; d < a.dim_qk; d += 32)
              dot += q_s[d] * CachedElement(cache.keys, r, d);
          } else {
            const T* k_row = k + RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_qk);
            for (int d = lane; d < a.dim_qk; d += 32) dot += q_s[d] * RopedElement(a, k_row, j, d);
          }
          for (int delta = 16; delta > 0; delta /= 2) {
            dot += __shfl_xor_sync(0xffffffffu, dot, delta);
          }
          s = ModifyScore(a, h, i, j, a.scale * dot);
        }
        if (lane == 0) p_s[t] = s;
      }
      __syncthreads();

      float chunk_max = -INFINITY;
      for (int t = 0; t < n; ++t) chunk_max = fmaxf(chunk_max, p_s[t]);
      const float m_new = fmaxf(m, chunk_max);
      // While every key so far is hidden there is nothing to accumulate.
      if (m_new != -INFINITY) {
        // Rescales what was accumulated against the old max; exactly 0 when nothing was.
        const float correction = m == -INFINITY ? 0.0f : expf(m - m_new);
        __syncthreads();  // every thread has read the scores before they turn into weights
        for (int t = threadIdx.x; t < n; t += kThreads) p_s[t] = expf(p_s[t] - m_new);  // -inf: 0
        __syncthreads();
        float chunk_sum = 0.0f;
        for (int t = 0; t < n; ++t) chunk_sum += p_s[t];
        l = l * correction + chunk_sum;
        for (int d = threadIdx.x; d < a.dim_v; d += kThreads) {
          float out = acc[d] * correction;
          for (int t = 0; t < n; ++t) {
            const float p = p_s[t];
            if (p == 0.0f) continue;  // hidden keys contribute nothing, not even 0 * NaN
            if (cache.page_table != nullptr) {
              out += p * CachedElement(cache.values, LocateCacheRow(cache, b, j0 + t, kh), d);
            } else {
              const T* v_row = v + RowOffset(b, a.seq_kv, j0 + t, a.heads_kv, kh, a.dim_v);
              out += p * ToFloat(v_row[d]);
            }
          }
          acc[d] = out;
        }
        m = m_new;
      }
      __syncthreads();  // p_s is overwritten by the next chunk
    }

    // l is zero only when every key of the row is hidden: the row outputs zeros, not NaN.
    const int64_t o_offset = RowOffset(b, a.seq_q, i, a.heads_out, h, a.dim_v);
    for (int d = threadIdx.x; d < a.dim_v; d += kThreads) {
      const float out = l > 0.0f ? acc[d] / l : 0.0f;
      o[o_offset + d] = FromFloat<T>(out);
      if (saved_out != nullptr) saved_out[o_offset + d] = out;
    }
    if (saved_lse != nullptr && threadIdx.x == 0) {
      saved_lse[bh * a.seq_q + i] = l > 0.0f ? m + logf(l) : -INFINITY;
    }
    __syncthreads();  // q_s and acc are reused by the block's next row
  }
}

template <typename T>
cudaError_t Launch(const AttentionArgs& args, const KvCacheArgs& cache, float* saved_out,
                   float* saved_lse, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(args.batch) * args.heads_out * args.seq_q;
  if (rows == 0) return cudaSuccess;
  const size_t shared_bytes =
      (static_cast<size_t>(args.dim_qk) + static_cast<size_t>(args.dim_v) + kChunk) * sizeof(float);
  if (shared_bytes > kDefaultSharedBytes) {
    // Head dims past ~12k floats together need the opt-in carve-out; the call fails (and so does
    // this launch) when even that is too small.
    const cudaError_t error = cudaFuncSetAttribute(
        ReferenceAttentionKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(std::min<size_t>(shared_bytes, 1u << 30)));
    if (error != cudaSuccess) return error;
  }
  const unsigned int grid = static_cast<unsigned int>(std::min(rows, kMaxGridX));
  ReferenceAttentionKernel<T>
      <<<grid, kThreads, shared_bytes, stream>>>(args, cache, saved_out, saved_lse);
  return cudaGetLastError();
}

}  // namespace

namespace {

cudaError_t LaunchFor(const AttentionArgs& args, const KvCacheArgs& cache, float* saved_out,
                      float* saved_lse, cudaStream_t stream) {
  if (args.batch < 0 || args.heads_out < 0 || args.seq_q < 0 || args.seq_kv <= 0 ||
      args.dim_qk <= 0 || args.dim_v <= 0) {
    return cudaErrorInvalidValue;
  }
  switch (args.storage) {
    case Storage::kFloat32:
      return Launch<float>(args, cache, saved_out, saved_lse, stream);
    case Storage::kFloat16:
      return Launch<__half>(args, cache, saved_out, saved_lse, stream);
    case Storage::kBFloat16:
      return Launch<__nv_bfloat16>(args, cache, saved_out, saved_lse, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchReferenceAttention(const AttentionArgs& args, cudaStream_t stream) {
  return LaunchFor(args, KvCacheArgs(), nullptr, nullptr, stream);
}

cudaError_t LaunchReferenceAttentionSaving(const AttentionArgs& args, float* saved_out,
                                           float* saved_lse, cudaStream_t stream) {
  return LaunchFor(args, KvCacheArgs(), saved_out, saved_lse, stream);
}

cudaError_t LaunchReferenceAttentionFromCache(const AttentionArgs& args, const KvCacheArgs& cache,
                                              cudaStream_t stream) {
  if (cache.page_table == nullptr) return cudaErrorInvalidValue;
  return LaunchFor(args, cache, nullptr, nullptr, stream);
}

}  // namespace attnbench::cuda
