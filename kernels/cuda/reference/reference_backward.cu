// cuda_reference's backward kernels. Like the forward (reference_attention.cu) they favour being
// plainly correct over being fast: float32 math whatever the storage, one thread block per row,
// no tensor cores, no tile skipping. Three kernels, each writing disjoint outputs in a fixed order,
// so the gradients are deterministic (no atomics):
//
//   rows     D_i = <dO_i, O_i> for every (b, h, i), a warp per row (O in float32, as the forward
//            computed it before rounding)
//   keys     a block per key row (b, j, kv head kh): for every output head h reading kh and every
//            query i the mask keeps for (b, h), with q' and k' after RoPE and s the final score:
//              P = exp(s - lse_i), dP = <dO_i, v_j>, dT = P (dP - D_i) s'(t)
//              dV_j += P dO_i,  dK'_j += scale dT q'_i;  then dK_j = R(j)^T dK'_j
//   queries  a block per query row (b, i, query head qh): for every output head h reading qh and
//            every kept key j, s, P, dP and dT again: dQ'_i += scale dT k'_j; dQ_i = R(i')^T dQ'_i
//
// As in cpu_reference (kernels/cpu/cpu_backward.h), the query pass recomputes the scores and dP
// instead of accumulating dQ from the key pass with atomics: seven matmuls' work where the
// counting of §7 has five, for sums whose order never changes. K and V are read per kv head and
// never expanded to the output heads: dK and dV sum over the heads reading their kv head, dQ over
// the heads reading its query head (BackwardArgs' inverted head map). Gradients are rounded to the
// storage type once, at the end.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/cuda/common/backward_row_terms.cuh"
#include "kernels/cuda/common/score_grads.cuh"
#include "kernels/cuda/reference/reference_backward.h"

namespace attnbench::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Queries (key pass) or keys (query pass) scored per step; their terms live in shared memory, so
// any sequence length runs with a fixed footprint.
constexpr int kChunk = 128;
// The largest x dimension of a grid; rows past it are reached by the grid-stride loops.
constexpr int64_t kMaxGridX = 2147483647;
// Dynamic shared memory a kernel may use without opting in.
constexpr size_t kDefaultSharedBytes = 48 * 1024;

__device__ __forceinline__ float WarpSum(float x) {
  for (int delta = 16; delta > 0; delta /= 2) x += __shfl_xor_sync(0xffffffffu, x, delta);
  return x;
}

// Index of (b, h, i) in the [B, H_out, S_q] row statistics (log-sum-exp, D).
__device__ __forceinline__ int64_t StatIndex(const AttentionArgs& a, int b, int h, int64_t i) {
  return (static_cast<int64_t>(b) * a.heads_out + h) * a.seq_q + i;
}

// scale * dT of one kept pair: with t = scale <q', k'> and s = ModifyScore(t), P = exp(s - lse),
// dS = P (dP - D), dT = dS ds/dt. `dot` is <q', k'>, `dp` is <dO_i, v_j>.
__device__ __forceinline__ float ScaledScoreGrad(const AttentionArgs& a, int h, int64_t i,
                                                 int64_t j, float dot, float dp, float lse,
                                                 float row_term, float* p_out) {
  const float s = ModifyScore(a, h, i, j, a.scale * dot);
  const float p = expf(s - lse);
  *p_out = p;
  return a.scale * p * (dp - row_term) * ModifiedScoreSlope(a, s);
}

// One block per (b, j, kv head) key row, grid-stride over rows = B * H_kv * S_kv.
// Shared memory (floats): k'_j [dim_qk] and v_j [dim_v], the dK'_j [dim_qk] and dV_j [dim_v] sums
// (thread t owns dims t, t + kThreads, ...), and P and scale * dT of the current query chunk
// [kChunk each]. Every branch a barrier sits in is block-uniform.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    KeyPassKernel(const __grid_constant__ AttentionArgs a, const __grid_constant__ BackwardArgs g) {
  extern __shared__ float shared[];
  float* k_s = shared;
  float* v_s = k_s + a.dim_qk;
  float* dk_s = v_s + a.dim_v;
  float* dv_s = dk_s + a.dim_qk;
  float* p_s = dv_s + a.dim_v;
  float* ds_s = p_s + kChunk;

  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(g.grad_out);
  T* dk = static_cast<T*>(g.dk);
  T* dv = static_cast<T*>(g.dv);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_kv * a.seq_kv;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t j = row % a.seq_kv;
    const int64_t bk = row / a.seq_kv;
    const int kh = static_cast<int>(bk % a.heads_kv);
    const int b = static_cast<int>(bk / a.heads_kv);
    const int64_t k_offset = RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_qk);
    const int64_t v_offset = RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_v);
    for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
      k_s[d] = RopedElement(a, k + k_offset, j, d);
      dk_s[d] = 0.0f;
    }
    for (int d = threadIdx.x; d < a.dim_v; d += kThreads) {
      v_s[d] = ToFloat(v[v_offset + d]);
      dv_s[d] = 0.0f;
    }
    __syncthreads();

    for (int e = g.kv_head_offsets[kh]; e < g.kv_head_offsets[kh + 1]; ++e) {
      const int h = g.kv_heads[e];
      const int qh = a.head_map[2 * h];
      for (int64_t i0 = 0; i0 < a.seq_q; i0 += kChunk) {
        const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), a.seq_q - i0));
        // P and dT: a warp per query, so the Q and dO row reads are coalesced across lanes.
        for (int t = warp; t < n; t += kWarps) {
          const int64_t i = i0 + t;
          float p = 0.0f;
          float ds = 0.0f;
          if (MaskKeeps(a, b, h, i, j)) {  // warp-uniform: every lane has the same (i, j)
            const T* q_row = q + RowOffset(b, a.seq_q, i, a.heads_q, qh, a.dim_qk);
            const T* do_row = dout + RowOffset(b, a.seq_q, i, a.heads_out, h, a.dim_v);
            float dot = 0.0f;
            for (int d = lane; d < a.dim_qk; d += 32) {
              dot += RopedElement(a, q_row, i + a.offset, d) * k_s[d];
            }
            float dp = 0.0f;
            for (int d = lane; d < a.dim_v; d += 32) dp += ToFloat(do_row[d]) * v_s[d];
            dot = WarpSum(dot);
            dp = WarpSum(dp);
            const int64_t stat = StatIndex(a, b, h, i);
            ds = ScaledScoreGrad(a, h, i, j, dot, dp, g.lse[stat], g.row_terms[stat], &p);
          }
          if (lane == 0) {
            p_s[t] = p;
            ds_s[t] = ds;
          }
        }
        __syncthreads();
        // Hidden queries (P = 0, and so dT = 0) are skipped: they contribute nothing, not even
        // 0 * NaN. The sums run over the chunk in query order, the same on every run.
        for (int d = threadIdx.x; d < a.dim_v; d += kThreads) {
          float acc = dv_s[d];
          for (int t = 0; t < n; ++t) {
            const float p = p_s[t];
            if (p == 0.0f) continue;
            acc += p * ToFloat(dout[RowOffset(b, a.seq_q, i0 + t, a.heads_out, h, a.dim_v) + d]);
          }
          dv_s[d] = acc;
        }
        for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
          float acc = dk_s[d];
          for (int t = 0; t < n; ++t) {
            if (p_s[t] == 0.0f) continue;
            const int64_t i = i0 + t;
            const T* q_row = q + RowOffset(b, a.seq_q, i, a.heads_q, qh, a.dim_qk);
            acc += ds_s[t] * RopedElement(a, q_row, i + a.offset, d);
          }
          dk_s[d] = acc;
        }
        __syncthreads();  // p_s and ds_s are overwritten by the next chunk; dk_s is read below
      }
    }

    // dK leaves through RoPE's transpose at j (it pairs dims, hence the barrier above); dV as is.
    for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
      dk[k_offset + d] = FromFloat<T>(RopeTransposedElement(a, dk_s, j, d));
    }
    for (int d = threadIdx.x; d < a.dim_v; d += kThreads) dv[v_offset + d] = FromFloat<T>(dv_s[d]);
    __syncthreads();  // the shared rows are reused by the block's next key
  }
}

// One block per (b, i, query head) query row, grid-stride over rows = B * H_q * S_q.
// Shared memory (floats): q'_i [dim_qk], dO of the current head's row [dim_v], the dQ'_i sum
// [dim_qk] and scale * dT of the current key chunk [kChunk].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    QueryPassKernel(const __grid_constant__ AttentionArgs a,
                    const __grid_constant__ BackwardArgs g) {
  extern __shared__ float shared[];
  float* q_s = shared;
  float* do_s = q_s + a.dim_qk;
  float* dq_s = do_s + a.dim_v;
  float* ds_s = dq_s + a.dim_qk;

  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(g.grad_out);
  T* dq = static_cast<T*>(g.dq);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_q * a.seq_q;

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t i = row % a.seq_q;
    const int64_t bq = row / a.seq_q;
    const int qh = static_cast<int>(bq % a.heads_q);
    const int b = static_cast<int>(bq / a.heads_q);
    const int64_t ip = i + a.offset;  // the query's absolute position (bottom-right aligned)
    const int64_t q_offset = RowOffset(b, a.seq_q, i, a.heads_q, qh, a.dim_qk);
    for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
      q_s[d] = RopedElement(a, q + q_offset, ip, d);
      dq_s[d] = 0.0f;
    }

    for (int e = g.query_head_offsets[qh]; e < g.query_head_offsets[qh + 1]; ++e) {
      const int h = g.query_heads[e];
      const int kh = a.head_map[2 * h + 1];
      const int64_t stat = StatIndex(a, b, h, i);
      const float lse = g.lse[stat];
      const float row_term = g.row_terms[stat];
      // do_s was last read before the previous chunk's final barrier.
      const T* do_row = dout + RowOffset(b, a.seq_q, i, a.heads_out, h, a.dim_v);
      for (int d = threadIdx.x; d < a.dim_v; d += kThreads) do_s[d] = ToFloat(do_row[d]);
      __syncthreads();
      for (int64_t j0 = 0; j0 < a.seq_kv; j0 += kChunk) {
        const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), a.seq_kv - j0));
        // dT: a warp per key, so the K and V row reads are coalesced across lanes.
        for (int t = warp; t < n; t += kWarps) {
          const int64_t j = j0 + t;
          float ds = 0.0f;
          if (MaskKeeps(a, b, h, i, j)) {  // warp-uniform
            const T* k_row = k + RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_qk);
            const T* v_row = v + RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_v);
            float dot = 0.0f;
            for (int d = lane; d < a.dim_qk; d += 32) dot += q_s[d] * RopedElement(a, k_row, j, d);
            float dp = 0.0f;
            for (int d = lane; d < a.dim_v; d += 32) dp += do_s[d] * ToFloat(v_row[d]);
            dot = WarpSum(dot);
            dp = WarpSum(dp);
            float p;
            ds = ScaledScoreGrad(a, h, i, j, dot, dp, lse, row_term, &p);
          }
          if (lane == 0) ds_s[t] = ds;
        }
        __syncthreads();
        // Hidden keys (dT = 0) are skipped; the sum runs in key order, the same on every run.
        for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
          float acc = dq_s[d];
          for (int t = 0; t < n; ++t) {
            const float ds = ds_s[t];
            if (ds == 0.0f) continue;
            const int64_t j = j0 + t;
            acc +=
                ds * RopedElement(a, k + RowOffset(b, a.seq_kv, j, a.heads_kv, kh, a.dim_qk), j, d);
          }
          dq_s[d] = acc;
        }
        __syncthreads();  // ds_s is overwritten by the next chunk; dq_s is read below
      }
    }
    // A query head no output head reads gets zeros; the barrier orders its zeroing before the
    // paired reads of RoPE's transpose.
    __syncthreads();
    for (int d = threadIdx.x; d < a.dim_qk; d += kThreads) {
      dq[q_offset + d] = FromFloat<T>(RopeTransposedElement(a, dq_s, ip, d));
    }
    __syncthreads();  // the shared rows are reused by the block's next query
  }
}

// Opts a kernel into `bytes` of dynamic shared memory when that is past the default; the call
// fails (and so does the launch) when even the opt-in carve-out is too small.
template <typename Kernel>
cudaError_t AllowSharedBytes(Kernel kernel, size_t bytes) {
  if (bytes <= kDefaultSharedBytes) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(std::min<size_t>(bytes, 1u << 30)));
}

unsigned int GridFor(int64_t blocks) {
  return static_cast<unsigned int>(std::min(blocks, kMaxGridX));
}

template <typename T>
cudaError_t Launch(const AttentionArgs& a, const BackwardArgs& g, cudaStream_t stream) {
  const int64_t output_rows = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
  const int64_t key_rows = static_cast<int64_t>(a.batch) * a.heads_kv * a.seq_kv;
  const int64_t query_rows = static_cast<int64_t>(a.batch) * a.heads_q * a.seq_q;
  if (output_rows > 0) {
    BackwardRowTermsKernel<T, kWarps>
        <<<GridFor((output_rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(a, g);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  if (key_rows > 0) {
    const size_t bytes = (2 * static_cast<size_t>(a.dim_qk) + 2 * static_cast<size_t>(a.dim_v) +
                          2 * static_cast<size_t>(kChunk)) *
                         sizeof(float);
    if (cudaError_t e = AllowSharedBytes(KeyPassKernel<T>, bytes); e != cudaSuccess) return e;
    KeyPassKernel<T><<<GridFor(key_rows), kThreads, bytes, stream>>>(a, g);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  if (query_rows > 0) {
    const size_t bytes =
        (2 * static_cast<size_t>(a.dim_qk) + static_cast<size_t>(a.dim_v) + kChunk) * sizeof(float);
    if (cudaError_t e = AllowSharedBytes(QueryPassKernel<T>, bytes); e != cudaSuccess) return e;
    QueryPassKernel<T><<<GridFor(query_rows), kThreads, bytes, stream>>>(a, g);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t LaunchReferenceBackward(const AttentionArgs& args, const BackwardArgs& grads,
                                    cudaStream_t stream) {
  if (args.batch < 0 || args.heads_out < 0 || args.seq_q < 0 || args.seq_kv <= 0 ||
      args.dim_qk <= 0 || args.dim_v <= 0) {
    return cudaErrorInvalidValue;
  }
  if (grads.grad_out == nullptr || grads.out == nullptr || grads.lse == nullptr ||
      grads.row_terms == nullptr || grads.dq == nullptr || grads.dk == nullptr ||
      grads.dv == nullptr || grads.query_head_offsets == nullptr || grads.query_heads == nullptr ||
      grads.kv_head_offsets == nullptr || grads.kv_heads == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (args.storage) {
    case Storage::kFloat32:
      return Launch<float>(args, grads, stream);
    case Storage::kFloat16:
      return Launch<__half>(args, grads, stream);
    case Storage::kBFloat16:
      return Launch<__nv_bfloat16>(args, grads, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnbench::cuda
