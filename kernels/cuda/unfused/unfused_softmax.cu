// Kernels of the unfused (cuBLAS) attention baseline: the row softmax between the two GEMMs,
// which applies the score modifiers and the mask with the shared device helpers so it agrees with
// every other backend, plus the RoPE pre-pass and the per-chunk pointer arrays the batched GEMMs
// read. Declared in unfused_kernels.h; unfused_attention.cc drives them.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/unfused/row_reduce.cuh"
#include "kernels/cuda/unfused/unfused_kernels.h"

namespace attnbench::cuda {
namespace {

constexpr int kSoftmaxThreads = kRowThreads;
constexpr int kElementwiseThreads = 256;
constexpr int kPointerThreads = 128;
constexpr int64_t kMaxGridX = 2147483647;

unsigned int GridFor(int64_t items, int threads) {
  return static_cast<unsigned int>(std::min((items + threads - 1) / threads, kMaxGridX));
}

// ---- RoPE pre-pass ----------------------------------------------------------------------------

// out[e] = in[e] rotated for the position of its token: e's row is token s (of `seq`) at
// position s + pos_offset. Dimensions past rope_dims are copied unchanged.
template <typename T>
__global__ void RopeCopyKernel(const __grid_constant__ AttentionArgs a, const T* in, T* out,
                               int64_t seq, int32_t heads, int64_t pos_offset, int64_t n) {
  const int64_t dim = a.dim_qk;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % dim);
    const int64_t s = (e / (dim * heads)) % seq;
    out[e] = FromFloat<T>(RopedElement(a, in + (e - d), s + pos_offset, d));
  }
}

template <typename T>
cudaError_t LaunchRope(const AttentionArgs& a, void* q_out, void* k_out, cudaStream_t stream) {
  const int64_t nq = static_cast<int64_t>(a.batch) * a.seq_q * a.heads_q * a.dim_qk;
  const int64_t nk = static_cast<int64_t>(a.batch) * a.seq_kv * a.heads_kv * a.dim_qk;
  if (nq > 0) {
    RopeCopyKernel<T><<<GridFor(nq, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        a, static_cast<const T*>(a.q), static_cast<T*>(q_out), a.seq_q, a.heads_q, a.offset, nq);
    if (const cudaError_t error = cudaGetLastError(); error != cudaSuccess) return error;
  }
  if (nk > 0) {
    RopeCopyKernel<T><<<GridFor(nk, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        a, static_cast<const T*>(a.k), static_cast<T*>(k_out), a.seq_kv, a.heads_kv, 0, nk);
  }
  return cudaGetLastError();
}

// ---- pointer arrays ---------------------------------------------------------------------------

// Thread p fills entry p of every array for pair pair0 + p (see LaunchUnfusedPointers). Built on
// the device from the head map so arbitrary maps (GQKVA, explicit) need no host round trip.
__global__ void PointersKernel(const __grid_constant__ AttentionArgs a, const char* q,
                               const char* k, int32_t element_bytes, int64_t pair0, int32_t pairs,
                               int64_t row0, int32_t rows, float* scores, void** ptrs,
                               int64_t ptr_stride) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  const int64_t pair = pair0 + p;
  const int b = static_cast<int>(pair / a.heads_out);
  const int h = static_cast<int>(pair % a.heads_out);
  const int qh = a.head_map[2 * h];
  const int kh = a.head_map[2 * h + 1];
  const char* v = static_cast<const char*>(a.v);
  char* o = static_cast<char*>(a.o);
  ptrs[kPtrK * ptr_stride + p] =
      const_cast<char*>(k + RowOffset(b, a.seq_kv, 0, a.heads_kv, kh, a.dim_qk) * element_bytes);
  ptrs[kPtrQ * ptr_stride + p] =
      const_cast<char*>(q + RowOffset(b, a.seq_q, row0, a.heads_q, qh, a.dim_qk) * element_bytes);
  ptrs[kPtrScores * ptr_stride + p] = scores + static_cast<int64_t>(p) * rows * a.seq_kv;
  ptrs[kPtrV * ptr_stride + p] =
      const_cast<char*>(v + RowOffset(b, a.seq_kv, 0, a.heads_kv, kh, a.dim_v) * element_bytes);
  ptrs[kPtrO * ptr_stride + p] =
      o + RowOffset(b, a.seq_q, row0, a.heads_out, h, a.dim_v) * element_bytes;
}

// ---- built-in modifiers as a pass of their own -----------------------------------------------

// Element e of the chunk is pair pair0 + e / (rows * S_kv), query row row0 + (e / S_kv) % rows,
// key e % S_kv: the softmax's row order, one element per thread.
__global__ void ModifiersKernel(const __grid_constant__ AttentionArgs a, float* scores,
                                int64_t pair0, int64_t row0, int32_t rows, int64_t n) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % a.seq_kv;
    const int64_t r = e / a.seq_kv;
    const int h = static_cast<int>((pair0 + r / rows) % a.heads_out);
    scores[e] = ModifyScore(a, h, row0 + r % rows, j, scores[e]);
  }
}

// ---- softmax ----------------------------------------------------------------------------------

// One block per score row (grid-stride over pairs * rows rows). Three passes over the row:
// modifiers and mask written back as float (keeps tanh and the mask out of the later passes),
// the sum of exponentials, then P written over the row in the storage type. With `lse` (a
// backward's forward) the row's natural-log log-sum-exp goes to lse[pair * S_q + i].
template <typename T>
__global__ void __launch_bounds__(kSoftmaxThreads)
    SoftmaxKernel(const __grid_constant__ AttentionArgs a, float* scores, int64_t pair0,
                  int64_t row0, int32_t rows, int64_t total_rows, float* lse) {
  __shared__ float partial[kRowWarps];
  const int64_t n = a.seq_kv;
  for (int64_t r = blockIdx.x; r < total_rows; r += gridDim.x) {
    const int64_t pair = pair0 + r / rows;
    const int b = static_cast<int>(pair / a.heads_out);
    const int h = static_cast<int>(pair % a.heads_out);
    const int64_t i = row0 + r % rows;
    float* s = scores + r * n;

    float thread_max = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += kSoftmaxThreads) {
      const float x = MaskKeeps(a, b, h, i, j) ? ModifyScore(a, h, i, j, s[j]) : -INFINITY;
      s[j] = x;
      thread_max = fmaxf(thread_max, x);
    }
    const float row_max = BlockMax(thread_max, partial);

    // row_max is -inf only when every key is hidden; the row then becomes zeros.
    float thread_sum = 0.0f;
    if (row_max != -INFINITY) {
      for (int64_t j = threadIdx.x; j < n; j += kSoftmaxThreads) thread_sum += expf(s[j] - row_max);
    }
    const float row_sum = BlockSum(thread_sum, partial);  // >= 1 when row_max is finite
    const float inv_sum = row_max != -INFINITY ? 1.0f / row_sum : 0.0f;
    if (lse != nullptr && threadIdx.x == 0) {
      lse[pair * a.seq_q + i] = row_max != -INFINITY ? row_max + logf(row_sum) : -INFINITY;
    }

    // P[j] (sizeof(T) <= 4 bytes) overlaps the bytes of scores with index <= j. Writing a whole
    // slice of kSoftmaxThreads entries after every thread has read that slice (the barrier)
    // therefore never clobbers a score still to be read.
    T* p = reinterpret_cast<T*>(s);
    for (int64_t j0 = 0; j0 < n; j0 += kSoftmaxThreads) {
      const int64_t j = j0 + threadIdx.x;
      const float value = (j < n && row_max != -INFINITY) ? expf(s[j] - row_max) * inv_sum : 0.0f;
      __syncthreads();
      if (j < n) p[j] = FromFloat<T>(value);
    }
    __syncthreads();  // partial and the row's last slice are done before the next row
  }
}

template <typename T>
cudaError_t LaunchSoftmax(const AttentionArgs& a, float* scores, int64_t pair0, int32_t pairs,
                          int64_t row0, int32_t rows, float* lse, cudaStream_t stream) {
  const int64_t total_rows = static_cast<int64_t>(pairs) * rows;
  if (total_rows == 0) return cudaSuccess;
  const unsigned int grid = static_cast<unsigned int>(std::min(total_rows, kMaxGridX));
  SoftmaxKernel<T>
      <<<grid, kSoftmaxThreads, 0, stream>>>(a, scores, pair0, row0, rows, total_rows, lse);
  return cudaGetLastError();
}

int32_t ElementBytes(Storage storage) { return storage == Storage::kFloat32 ? 4 : 2; }

}  // namespace

cudaError_t LaunchUnfusedRope(const AttentionArgs& args, void* q_out, void* k_out,
                              cudaStream_t stream) {
  if (args.rope_cos_sin == nullptr) return cudaErrorInvalidValue;
  switch (args.storage) {
    case Storage::kFloat32:
      return LaunchRope<float>(args, q_out, k_out, stream);
    case Storage::kFloat16:
      return LaunchRope<__half>(args, q_out, k_out, stream);
    case Storage::kBFloat16:
      return LaunchRope<__nv_bfloat16>(args, q_out, k_out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchUnfusedPointers(const AttentionArgs& args, const void* q, const void* k,
                                  int64_t pair0, int32_t pairs, int64_t row0, int32_t rows,
                                  float* scores, void** ptrs, int64_t ptr_stride,
                                  cudaStream_t stream) {
  if (pairs <= 0) return cudaSuccess;
  if (pairs > ptr_stride) return cudaErrorInvalidValue;
  PointersKernel<<<GridFor(pairs, kPointerThreads), kPointerThreads, 0, stream>>>(
      args, static_cast<const char*>(q), static_cast<const char*>(k), ElementBytes(args.storage),
      pair0, pairs, row0, rows, scores, ptrs, ptr_stride);
  return cudaGetLastError();
}

cudaError_t LaunchUnfusedModifiers(const AttentionArgs& args, float* scores, int64_t pair0,
                                   int32_t pairs, int64_t row0, int32_t rows, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(pairs) * rows * args.seq_kv;
  if (n <= 0) return cudaSuccess;
  ModifiersKernel<<<GridFor(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      args, scores, pair0, row0, rows, n);
  return cudaGetLastError();
}

cudaError_t LaunchUnfusedSoftmax(const AttentionArgs& args, float* scores, int64_t pair0,
                                 int32_t pairs, int64_t row0, int32_t rows, cudaStream_t stream,
                                 float* lse) {
  switch (args.storage) {
    case Storage::kFloat32:
      return LaunchSoftmax<float>(args, scores, pair0, pairs, row0, rows, lse, stream);
    case Storage::kFloat16:
      return LaunchSoftmax<__half>(args, scores, pair0, pairs, row0, rows, lse, stream);
    case Storage::kBFloat16:
      return LaunchSoftmax<__nv_bfloat16>(args, scores, pair0, pairs, row0, rows, lse, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnbench::cuda
