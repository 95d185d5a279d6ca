// Which query tile a Hopper block works on, and which K/V tiles it walks: the tile scheduler and
// the mask's tile walk of the fused kernel, both pure functions of the launch so that the
// producer and consumer warpgroups of a block agree without talking.
//
// Work items: one query tile of kBr rows of one (batch, output head), numbered query tile
// fastest with each head's last (heaviest causal) tile first, then heads, then batch. Blocks
// start in index order, so the blocks running at once mostly share one head's K/V in L2 (with
// heads fastest, 132 running blocks streamed 132 heads' K/V from memory: 20-25% slower at
// S = 16k). A block takes items gridDim.x apart: one each when the grid covers them all, several
// in a persistent launch. Under a block-sparse mask the items are taken in a host-built order
// that balances their unequal work (AttentionArgs::item_order, item_order.h).
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_SCHEDULER_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_SCHEDULER_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/mask.cuh"

namespace attnbench::cuda::flash {

struct WorkItem {
  int64_t qtile;
  int64_t q0;  // first query row
  int h, b, q_head, kv_head;
};

template <int kBr>
struct TileScheduler {
  int64_t qtiles;
  int64_t items;

  __device__ __forceinline__ explicit TileScheduler(const AttentionArgs& a)
      : qtiles((a.seq_q + kBr - 1) / kBr), items(qtiles * a.heads_out * a.batch) {}

  __device__ __forceinline__ WorkItem Item(const AttentionArgs& a, int64_t index) const {
    if (a.item_order != nullptr) index = a.item_order[index];
    WorkItem it;
    it.qtile = qtiles - 1 - index % qtiles;
    it.q0 = it.qtile * kBr;
    it.h = static_cast<int>((index / qtiles) % a.heads_out);
    it.b = static_cast<int>(index / (qtiles * a.heads_out));
    it.q_head = a.head_map[2 * it.h];
    it.kv_head = a.head_map[2 * it.h + 1];
    return it;
  }
};

// The K/V tiles one work item visits, in order, and whether tile k needs a per-element mask.
// kTileList: the mask's precomputed list (AttentionArgs::block_tiles; UsesTileLists in
// configs.h); otherwise the contiguous range an interval mask (none, causal, window) keeps.
template <bool kTileList, int kBr, int kBc>
struct TileWalk {
  int count = 0;
  int first = 0;                  // interval: tile index of k = 0
  const int32_t* list = nullptr;  // block list: entries of this item

  __device__ __forceinline__ TileWalk(const AttentionArgs& a, const WorkItem& it, int64_t qtiles) {
    if constexpr (kTileList) {
      const int64_t p = a.block_per_head
                            ? (static_cast<int64_t>(it.b) * a.heads_out + it.h) * qtiles + it.qtile
                            : it.qtile;
      const int64_t begin = a.block_tile_offsets[p];
      list = a.block_tiles + begin;
      count = static_cast<int>(a.block_tile_offsets[p + 1] - begin);
    } else {
      const int64_t last_row = (it.q0 + kBr < a.seq_q ? it.q0 + kBr : a.seq_q) - 1;
      const KeyInterval keys = KeysKeptByRows(a, it.q0, last_row);
      if (keys.hi > keys.lo) {
        first = static_cast<int>(keys.lo / kBc);
        count = static_cast<int>((keys.hi + kBc - 1) / kBc) - first;
      }
    }
  }

  __device__ __forceinline__ int Tile(int k) const {
    if constexpr (kTileList) return list[k] & ~kTilePartial;
    return first + k;
  }
  // Tile lists only: the tile mixes kept and hidden pairs, so the kernel tests each pair.
  __device__ __forceinline__ bool Partial(int k) const {
    if constexpr (kTileList) return (list[k] & kTilePartial) != 0;
    return false;
  }
};

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_SCHEDULER_CUH_
