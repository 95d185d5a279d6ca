// Device-side pieces every CUDA attention kernel shares, so the reference, the fused kernel and
// the unfused softmax agree on one definition of docs/variants.md: reading and writing storage
// elements, the mask predicate and whole-tile coverage, RoPE from the host-built table, and the
// score modifiers (ALiBi, then softcap) in the order of §4.
#ifndef ATTNBENCH_KERNELS_CUDA_ATTENTION_DEVICE_CUH_
#define ATTNBENCH_KERNELS_CUDA_ATTENTION_DEVICE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

// ---- storage ----------------------------------------------------------------------------------

template <Storage S>
struct StorageTraits;
template <>
struct StorageTraits<Storage::kFloat32> {
  using T = float;
};
template <>
struct StorageTraits<Storage::kFloat16> {
  using T = __half;
};
template <>
struct StorageTraits<Storage::kBFloat16> {
  using T = __nv_bfloat16;
};

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Element offsets of BSHD rows.
__device__ __forceinline__ int64_t RowOffset(int64_t b, int64_t seq, int64_t pos, int64_t heads,
                                             int64_t head, int64_t dim) {
  return ((b * seq + pos) * heads + head) * dim;
}

// ---- mask -------------------------------------------------------------------------------------

enum class Coverage { kNone, kPartial, kAll };

// Whether (i, j) is kept for batch b, output head h (§3).
__device__ __forceinline__ bool MaskKeeps(const AttentionArgs& a, int b, int h, int64_t i,
                                          int64_t j) {
  const int64_t ip = i + a.offset;
  switch (a.mask) {
    case MaskCode::kNone:
      return true;
    case MaskCode::kCausal:
      return j <= ip;
    case MaskCode::kWindow:
      return (a.window_left < 0 || j >= ip - a.window_left) &&
             (a.window_right < 0 || j <= ip + a.window_right);
    case MaskCode::kBlock: {
      if (a.block_causal && j > ip) return false;
      int64_t base = 0;
      if (a.block_per_head) {
        base = (static_cast<int64_t>(b) * a.heads_out + h) * a.block_rows * a.block_cols;
      }
      return a.block_bitmap[base + (i / a.block_q) * a.block_cols + j / a.block_k] != 0;
    }
  }
  return true;
}

// Whether the tile of queries [i0, i1) and keys [j0, j1) (non-empty, clipped to S_q x S_kv by the
// caller) keeps no pair, some pairs, or every pair. Block masks scan the blocks the tile touches.
__device__ __forceinline__ Coverage TileCoverage(const AttentionArgs& a, int b, int h, int64_t i0,
                                                 int64_t i1, int64_t j0, int64_t j1) {
  // Causal part: keeps j <= i'. All kept when the tile's last key is at or below the first row's
  // position; none when its first key is past the last row's.
  const int64_t first_pos = i0 + a.offset;
  const int64_t last_pos = i1 - 1 + a.offset;
  switch (a.mask) {
    case MaskCode::kNone:
      return Coverage::kAll;
    case MaskCode::kCausal:
      if (j0 > last_pos) return Coverage::kNone;
      return j1 - 1 <= first_pos ? Coverage::kAll : Coverage::kPartial;
    case MaskCode::kWindow: {
      // Keeps first_pos - L <= j <= last_pos + R somewhere; all when every row keeps every key.
      const bool left = a.window_left >= 0;
      const bool right = a.window_right >= 0;
      if (right && j0 > last_pos + a.window_right) return Coverage::kNone;
      if (left && j1 - 1 < first_pos - a.window_left) return Coverage::kNone;
      const bool all_right = !right || j1 - 1 <= first_pos + a.window_right;
      const bool all_left = !left || j0 >= last_pos - a.window_left;
      return all_right && all_left ? Coverage::kAll : Coverage::kPartial;
    }
    case MaskCode::kBlock: {
      if (a.block_causal && j0 > last_pos) return Coverage::kNone;
      int64_t base = 0;
      if (a.block_per_head) {
        base = (static_cast<int64_t>(b) * a.heads_out + h) * a.block_rows * a.block_cols;
      }
      bool any = false;
      bool all = true;
      for (int64_t r = i0 / a.block_q; r <= (i1 - 1) / a.block_q; ++r) {
        for (int64_t c = j0 / a.block_k; c <= (j1 - 1) / a.block_k; ++c) {
          const bool kept = a.block_bitmap[base + r * a.block_cols + c] != 0;
          any = any || kept;
          all = all && kept;
        }
      }
      if (!any) return Coverage::kNone;
      if (a.block_causal && j1 - 1 > first_pos) return Coverage::kPartial;
      return all ? Coverage::kAll : Coverage::kPartial;
    }
  }
  return Coverage::kPartial;
}

// ---- modifiers --------------------------------------------------------------------------------

// Rotates x (a query or key row already in float) in place for position pos: x is the row's
// first `dims` values; pairs (m, m + rope_dims / 2) for m < rope_dims / 2.
__device__ __forceinline__ void RopePair(const AttentionArgs& a, int64_t pos, int m, float& x1,
                                         float& x2) {
  const int half = a.rope_dims / 2;
  const float c = a.rope_cos_sin[2 * (pos * half + m)];
  const float s = a.rope_cos_sin[2 * (pos * half + m) + 1];
  const float r1 = x1 * c - x2 * s;
  const float r2 = x2 * c + x1 * s;
  x1 = r1;
  x2 = r2;
}

// The value element d of a row takes after RoPE at position pos: row[d] is the unrotated row.
template <typename T>
__device__ __forceinline__ float RopedElement(const AttentionArgs& a, const T* row, int64_t pos,
                                              int d) {
  const float x = ToFloat(row[d]);
  if (a.rope_cos_sin == nullptr || d >= a.rope_dims) return x;
  const int half = a.rope_dims / 2;
  const int m = d < half ? d : d - half;
  const float c = a.rope_cos_sin[2 * (pos * half + m)];
  const float s = a.rope_cos_sin[2 * (pos * half + m) + 1];
  if (d < half) return x * c - ToFloat(row[d + half]) * s;
  return x * c + ToFloat(row[d - half]) * s;
}

// s (already scale * <q, k>) after ALiBi and softcap, for output head h, query i, key j.
__device__ __forceinline__ float ModifyScore(const AttentionArgs& a, int h, int64_t i, int64_t j,
                                             float s) {
  if (a.alibi_slopes != nullptr) {
    s += a.alibi_slopes[h] * static_cast<float>(j - (i + a.offset));
  }
  if (a.softcap > 0) s = a.softcap * tanhf(s / a.softcap);
  return s;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_ATTENTION_DEVICE_CUH_
