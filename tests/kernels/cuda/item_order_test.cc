// The Hopper kernel's balanced item order under block lists (kernels/cuda/flash/item_order.h and
// flash.h's ItemOrderFor), on the host: a permutation of the items, block totals within one item
// of each other for any work and grid, the work read from the lists in the scheduler's numbering,
// and the rule that picks it.
#include "kernels/cuda/flash/item_order.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/flash/flash.h"

namespace attnbench::cuda::flash {
namespace {

TEST(ItemOrderTest, PermutationWithBlockTotalsWithinOneItem) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = std::uniform_int_distribution<int>(1, 2000)(rng);
    const int blocks = std::uniform_int_distribution<int>(1, 160)(rng);
    std::vector<int64_t> work(n);
    for (int64_t& w : work) w = std::uniform_int_distribution<int>(1, 70)(rng);
    const std::vector<int32_t> order = BalancedItemOrder(work, blocks);
    ASSERT_EQ(order.size(), work.size());
    std::vector<int32_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i) << "not a permutation";
    const int used = std::min(n, blocks);
    std::vector<int64_t> total(used, 0);
    for (int p = 0; p < n; ++p) total[p % blocks] += work[order[p]];
    const int64_t spread = *std::max_element(total.begin(), total.end()) -
                           *std::min_element(total.begin(), total.end());
    EXPECT_LE(spread, *std::max_element(work.begin(), work.end()))
        << "n " << n << " blocks " << blocks;
  }
}

TEST(ItemOrderTest, LongestFirstAndTiesInNaturalOrder) {
  const std::vector<int64_t> work = {3, 9, 3, 5};
  EXPECT_EQ(BalancedItemOrder(work, 4), (std::vector<int32_t>{1, 3, 0, 2}));
  // Two blocks: run 0 forwards (9, 5), run 1 backwards (3 to block 1, then 3 to block 0).
  EXPECT_EQ(BalancedItemOrder(work, 2), (std::vector<int32_t>{1, 3, 2, 0}));
}

// Two (batch, head) pairs, 3 query tiles each: lists of lengths 0..5 in the order the plan stores
// them ((b * H + h) * qtiles + qtile); the scheduler numbers items with each head's last tile
// first.
TEST(ItemOrderTest, WorkFollowsTheSchedulersNumbering) {
  AttentionArgs a;
  a.batch = 2;
  a.heads_out = 1;
  a.seq_q = 300;  // 3 tiles of 128
  a.mask = MaskCode::kBlock;
  a.block_per_head = true;
  const std::vector<int64_t> offsets = {0, 0, 1, 3, 6, 10, 15};
  EXPECT_EQ(TileListWork(a, offsets, 128), (std::vector<int64_t>{3, 2, 1, 6, 5, 4}));
  a.block_per_head = false;  // one shared list set: qtiles entries
  const std::vector<int64_t> shared = {0, 4, 5, 7};
  EXPECT_EQ(TileListWork(a, shared, 128), (std::vector<int64_t>{3, 2, 5, 3, 2, 5}));
}

TEST(ItemOrderTest, OrderOnlyForSparseBlockLists) {
  AttentionArgs a;
  a.batch = 1;
  a.heads_out = 4;
  a.seq_q = 128 * 8;
  a.mask = MaskCode::kBlock;
  a.block_per_head = true;
  std::vector<int64_t> sparse{0}, dense{0};
  for (int p = 0; p < 32; ++p) {
    sparse.push_back(sparse.back() + 3);
    dense.push_back(dense.back() + kOrderedMaxTiles);
  }
  const std::vector<int32_t> order = ItemOrderFor(a, sparse, 132);
  EXPECT_EQ(order.size(), 32u);
  EXPECT_TRUE(ItemOrderFor(a, dense, 132).empty());
  EXPECT_TRUE(ItemOrderFor(a, sparse, 0).empty());
  a.mask = MaskCode::kCausal;
  EXPECT_TRUE(ItemOrderFor(a, sparse, 132).empty());
}

}  // namespace
}  // namespace attnbench::cuda::flash
