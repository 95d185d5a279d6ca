// The masks of docs/variants.md §3 on the device, written once for every CUDA kernel: the
// per-pair predicate (MaskKeeps), whole-tile coverage (TileCoverage), the range of keys an
// interval mask can keep for a block of query rows (KeyInterval), and the interval mask applied
// to the score fragments a fused kernel holds (MaskFragmentColumns). Query i sits at key position
// i' = i + offset (bottom-right alignment).
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_MASK_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_MASK_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/ptx.cuh"

namespace attnbench::cuda {

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

// The keys [lo, hi) that an interval mask (causal, window, or a block mask's causal part) can keep
// for some query of rows [first_row, last_row], clipped to [0, S_kv); lo >= hi when none. Kernels
// cut their K/V tile loop to it up front.
struct KeyInterval {
  int64_t lo = 0;
  int64_t hi = 0;
};
// Host code (a launcher's plan) takes the same interval.
__host__ __device__ __forceinline__ KeyInterval KeysKeptByRows(const AttentionArgs& a,
                                                               int64_t first_row,
                                                               int64_t last_row) {
  KeyInterval k{0, a.seq_kv};
  const int64_t first_pos = first_row + a.offset;
  const int64_t last_pos = last_row + a.offset;
  if (a.mask == MaskCode::kCausal || (a.mask == MaskCode::kBlock && a.block_causal)) {
    if (last_pos + 1 < k.hi) k.hi = last_pos + 1;
  } else if (a.mask == MaskCode::kWindow) {
    if (a.window_right >= 0 && last_pos + a.window_right + 1 < k.hi) {
      k.hi = last_pos + a.window_right + 1;
    }
    if (a.window_left >= 0 && first_pos - a.window_left > k.lo) k.lo = first_pos - a.window_left;
  }
  return k;
}

// The interval mask on the scores one thread holds in an accumulator fragment (fragment.cuh):
// for each of its two rows r, elements whose column 8 n + e (relative to the thread's first key
// of the tile) lies outside [lo[r], hi[r]] become -inf. Bounds are thread-relative so that the
// per-element work stays 32-bit.
template <int kN8, typename Frag>
__device__ __forceinline__ void MaskFragmentColumns(Frag& s, const int (&lo)[2],
                                                    const int (&hi)[2]) {
#pragma unroll
  for (int n = 0; n < kN8; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * n + e;
        if (col < lo[r] || col > hi[r]) FragAt(s, n, 2 * r + e) = kNegInf;
      }
    }
  }
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_MASK_CUH_
