// The per-pair mask test of the fused kernels' partly kept tiles, for one query row over the key
// columns one thread holds: j_c = jl + 8 (c / 2) + c % 2 for c < kCount, bit c set when (i, j_c)
// is kept and j_c < S_kv. Block masks find the row's bitmap line once and read one byte per block
// column the keys reach, with no division per key: MaskKeeps per pair divides 64-bit positions
// twice and loads a byte, which made a 64x64-block mask run at 2% of dense on Hopper
// (bench/RESULTS.md, 2026-12-07). Other masks (a mask_mod's partial tiles over an interval mask)
// take MaskKeeps per key.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_ROW_KEEP_BITS_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_ROW_KEEP_BITS_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/mask.cuh"

namespace attnbench::cuda::flash {

template <int kCount>
__device__ __forceinline__ uint32_t RowKeepBits(const AttentionArgs& a, int b, int h, int64_t i,
                                                int64_t jl) {
  static_assert(kCount <= 32, "one bit per column in a 32-bit word");
  uint32_t keep = 0;
  if (i >= a.seq_q) return 0;
  if (a.mask == MaskCode::kBlock) {
    int64_t base = 0;
    if (a.block_per_head) {
      base = (static_cast<int64_t>(b) * a.heads_out + h) * a.block_rows * a.block_cols;
    }
    const uint8_t* line = a.block_bitmap + base + (i / a.block_q) * a.block_cols;
    const int64_t ip = i + a.offset;
    // The block column before jl's, so the first key below reads jl's byte.
    int64_t kb = jl / a.block_k - 1;
    int64_t next = (kb + 1) * a.block_k;
    bool kept = false;
    // Rolled: unrolled, the compiler hoists every byte load into registers up front.
#pragma unroll 1
    for (int c = 0; c < kCount; ++c) {
      const int64_t j = jl + 8 * (c >> 1) + (c & 1);
      if (j >= a.seq_kv) break;  // keys only grow along c
      while (j >= next) {
        ++kb;
        next += a.block_k;
        kept = line[kb] != 0;
      }
      if (kept && (!a.block_causal || j <= ip)) keep |= 1u << c;
    }
    return keep;
  }
#pragma unroll 1
  for (int c = 0; c < kCount; ++c) {
    const int64_t j = jl + 8 * (c >> 1) + (c & 1);
    if (j < a.seq_kv && MaskKeeps(a, b, h, i, j)) keep |= 1u << c;
  }
  return keep;
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_ROW_KEEP_BITS_CUH_
