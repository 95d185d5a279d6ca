#include "kernels/cuda/flash/item_order.h"

#include <algorithm>
#include <numeric>

namespace attnbench::cuda::flash {

std::vector<int64_t> TileListWork(const AttentionArgs& args, const std::vector<int64_t>& offsets,
                                  int tile_q) {
  const int64_t qtiles = (args.seq_q + tile_q - 1) / tile_q;
  const int64_t items = qtiles * args.heads_out * args.batch;
  std::vector<int64_t> work(static_cast<size_t>(items));
  for (int64_t index = 0; index < items; ++index) {
    // The same numbering as TileScheduler::Item and the same list as TileWalk.
    const int64_t qtile = qtiles - 1 - index % qtiles;
    const int64_t h = (index / qtiles) % args.heads_out;
    const int64_t b = index / (qtiles * args.heads_out);
    const int64_t p = args.block_per_head ? (b * args.heads_out + h) * qtiles + qtile : qtile;
    work[static_cast<size_t>(index)] = offsets[p + 1] - offsets[p] + 1;
  }
  return work;
}

std::vector<int32_t> BalancedItemOrder(const std::vector<int64_t>& work, int blocks) {
  const int64_t n = static_cast<int64_t>(work.size());
  std::vector<int32_t> sorted(work.size());
  std::iota(sorted.begin(), sorted.end(), 0);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [&](int32_t a, int32_t b) { return work[a] > work[b]; });
  if (blocks <= 0) return sorted;
  std::vector<int32_t> order(work.size());
  for (int64_t run = 0; run * blocks < n; ++run) {
    // Run k fills positions k G .. k G + len - 1, i.e. blocks 0 .. len - 1 (a short last run
    // reaches only the lowest blocks). Even runs give block 0 the longest item, odd runs the
    // shortest, so the blocks that got more in one run get less in the next.
    const int64_t begin = run * blocks;
    const int64_t len = std::min<int64_t>(blocks, n - begin);
    for (int64_t g = 0; g < len; ++g) {
      order[begin + g] = sorted[begin + (run % 2 == 0 ? g : len - 1 - g)];
    }
  }
  return order;
}

}  // namespace attnbench::cuda::flash
