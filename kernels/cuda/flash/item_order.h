// The order in which the Hopper kernel's blocks take work items under a block-sparse mask.
// Items (query tiles of one (batch, output head)) then walk lists of kept K/V tiles of unequal
// length, so a grid that takes them in their natural order leaves some multiprocessors with
// more work than others, and at low density (a few tiles an item) each block's pipeline fill and
// epilogue are a large share of its time. A persistent grid of G blocks (one per multiprocessor)
// hides those behind the previous item, and this order balances it: items longest first, dealt
// to the blocks in alternating directions, so every block's total work is within one item of
// every other's. Built on the host once per problem, beside the tile lists. Plain C++.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_ITEM_ORDER_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_ITEM_ORDER_H_

#include <cstdint>
#include <vector>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda::flash {

// The work of every item in the scheduler's natural numbering (scheduler.cuh: query tile fastest,
// each head's last tile first, then heads, then batch): its kept K/V tiles plus one for the
// item's fixed cost (Q load, pipeline fill, epilogue). `offsets` are the tile lists' offsets as
// AttentionArgs::block_tile_offsets describes them (host copy), for query tiles of `tile_q` rows.
std::vector<int64_t> TileListWork(const AttentionArgs& args, const std::vector<int64_t>& offsets,
                                  int tile_q);

// order[g + k * blocks] is the k-th item block g takes (AttentionArgs::item_order): the items
// sorted by decreasing work, the k-th run of `blocks` of them dealt forwards for even k and
// backwards for odd k. Every item appears once; ties keep the natural order.
std::vector<int32_t> BalancedItemOrder(const std::vector<int64_t>& work, int blocks);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_ITEM_ORDER_H_
