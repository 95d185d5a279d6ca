// The mask policy of the fused Hopper kernel on one K/V tile of scores: which tiles need a
// per-element test at all, and the test itself. Interval masks (none, causal, window) cut the
// tile by a per-row key interval (common/mask.cuh). Masks that walk tile lists (block-sparse:
// lists built from the spec's tile coverage, kernels/spec/tile_plan.h) test the pairs of the tiles
// their list marks partial with the mask's device predicate (RowKeepBits). Every tile that crosses
// S_kv hides the keys past it (the TMA zero fill makes them score 0, not -inf).
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_TILE_MASK_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_TILE_MASK_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/mask.cuh"
#include "kernels/cuda/flash/row_keep_bits.cuh"

namespace attnbench::cuda::flash {

// Where one thread's scores of a tile sit: the positions i' of its two rows and of the first
// rows of its warpgroup, the row indices, and its first key column of the tile.
struct TileRows {
  int64_t pos[2];               // i' of the thread's rows
  int64_t row[2];               // i of the thread's rows
  int64_t first_pos, last_pos;  // i' of the warpgroup's first and last rows
};

// Masks tile scores in place. jl = the thread's first key of the tile (j0 + 2 (lane % 4)).
template <bool kTileList, int kBc, typename Frag>
__device__ __forceinline__ void MaskTile(Frag& s, const AttentionArgs& a, const TileRows& rows,
                                         int b, int h, int64_t j0, int64_t jl, bool partial) {
  constexpr int kN8 = kBc / 8;
  if constexpr (!kTileList) {
    const bool right =
        a.mask == MaskCode::kCausal || (a.mask == MaskCode::kWindow && a.window_right >= 0);
    const int64_t right_off = a.mask == MaskCode::kCausal ? 0 : a.window_right;
    const bool left = a.mask == MaskCode::kWindow && a.window_left >= 0;
    const bool cut_right = right && j0 + kBc - 1 > rows.first_pos + right_off;
    const bool cut_left = left && j0 < rows.last_pos - a.window_left;
    if (!cut_right && !cut_left && j0 + kBc <= a.seq_kv) return;
    // Thread-relative bounds, clamped so that they fit 32 bits: a bound below or above every
    // column stays so.
    auto clamp = [](int64_t x) { return static_cast<int>(x < -1 ? -1 : (x > kBc ? kBc : x)); };
    int lo[2], hi[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int64_t h_key = a.seq_kv - 1;
      if (right && rows.pos[r] + right_off < h_key) h_key = rows.pos[r] + right_off;
      hi[r] = clamp(h_key - jl);
      lo[r] = left ? clamp(rows.pos[r] - a.window_left - jl) : -1;
    }
    MaskFragmentColumns<kN8>(s, lo, hi);
  } else {
    if (!partial) {
      if (j0 + kBc <= a.seq_kv) return;
      const int lo[2] = {-1, -1};
      const int hi_all = static_cast<int>(a.seq_kv - 1 - jl < kBc ? a.seq_kv - 1 - jl : kBc);
      const int hi[2] = {hi_all, hi_all};
      MaskFragmentColumns<kN8>(s, lo, hi);
      return;
    }
    // Per pair, the mask's own predicate (row_keep_bits.cuh): one bit per column of this thread.
    // Any mask with a device predicate and a tile coverage in the spec runs this way.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t keep = RowKeepBits<kBc / 4>(a, b, h, rows.row[r], jl);
#pragma unroll
      for (int n = 0; n < kN8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if (((keep >> (2 * n + e)) & 1u) == 0) FragAt(s, n, 2 * r + e) = kNegInf;
        }
      }
    }
  }
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_TILE_MASK_CUH_
