// Tile plans under a mask_mod built from its per-tile classes (BuildTilePlanFromClasses, what
// cuda_flash's Hopper kernel walks), against brute force over every pair: a tile with a kept pair
// is listed, a listed tile not marked partial keeps every pair, an unlisted one keeps none; the
// classes come from the interpreter pair by pair, as the GPU classifier computes them. Over every
// built-in mask (the probabilistic and explicit block-sparse ones included), a mask_mod that
// reads the head (lists per (b, h)) and one that does not, ragged tiles, S_q != S_kv.
#include "kernels/spec/tile_plan.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

Problem Base(MaskKind kind) {
  Problem p = testing::SmallProblem();
  p.seq_len_q = 45;
  p.seq_len_kv = 70;
  p.mask.kind = kind;
  if (kind == MaskKind::kSlidingWindow) {
    p.mask.left_tokens = 13;
    p.mask.right_tokens = 2;
  }
  if (kind == MaskKind::kBlockSparse || kind == MaskKind::kProbabilisticBlockSparse) {
    p.mask.query_block_tokens = 8;
    p.mask.kv_block_tokens = 8;
  }
  if (kind == MaskKind::kBlockSparse) {
    for (int64_t r = 0; r < 6; ++r) {
      for (int64_t c = 0; c < 9; ++c) {
        if ((r * 3 + c) % 4 != 0) p.mask.blocks.push_back({r, c});
      }
    }
  }
  if (kind == MaskKind::kProbabilisticBlockSparse) {
    p.mask.c_coefficient = 0.6;
    p.mask.alpha = 0.5;
    p.mask.seed = 11;
  }
  return p;
}

// The classes the GPU classifier computes: every pair of the tile under the mask_mod alone.
std::vector<uint8_t> Classes(const Problem& with_mod, int64_t tile_q, int64_t tile_kv,
                             int64_t lists) {
  Problem only_mod = with_mod;
  only_mod.mask = Mask{};
  only_mod = NormalizeProblem(only_mod);
  const MaskEvaluator eval(only_mod);
  const int heads = 4;
  const int64_t qt = CeilDiv(only_mod.seq_len_q, tile_q),
                kt = CeilDiv(only_mod.seq_len_kv, tile_kv);
  std::vector<uint8_t> out;
  for (int64_t l = 0; l < lists; ++l) {
    for (int64_t a = 0; a < qt; ++a) {
      for (int64_t c = 0; c < kt; ++c) {
        bool any = false, all = true;
        for (int64_t i = a * tile_q; i < std::min((a + 1) * tile_q, only_mod.seq_len_q); ++i) {
          for (int64_t j = c * tile_kv; j < std::min((c + 1) * tile_kv, only_mod.seq_len_kv); ++j) {
            const bool k = eval.Keeps(l / heads, static_cast<int>(l % heads), i, j);
            any = any || k;
            all = all && k;
          }
        }
        out.push_back(all ? 2 : any ? 1 : 0);
      }
    }
  }
  return out;
}

void ExpectPlanMatchesPairs(const Problem& raw, int64_t tile_q, int64_t tile_kv, bool per_head) {
  const Problem p = NormalizeProblem(raw);
  const int64_t lists = per_head ? 2 * 4 : 1;
  absl::StatusOr<TilePlan> plan =
      BuildTilePlanFromClasses(p, tile_q, tile_kv, Classes(p, tile_q, tile_kv, lists), lists, 3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const bool plan_per_head = per_head || p.mask.kind == MaskKind::kProbabilisticBlockSparse;
  EXPECT_EQ(plan->per_head, plan_per_head);
  const MaskEvaluator full(p);
  int64_t partial = 0, whole = 0, skipped = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int h = 0; h < 4; ++h) {
      const int64_t set = plan->per_head ? b * 4 + h : 0;
      for (int64_t qt = 0; qt < plan->q_tiles; ++qt) {
        const int64_t row = set * plan->q_tiles + qt;
        std::vector<int32_t> entries(plan->tiles.begin() + plan->offsets[row],
                                     plan->tiles.begin() + plan->offsets[row + 1]);
        for (int64_t kt = 0; kt < plan->kv_tiles; ++kt) {
          bool listed = false;
          int32_t entry = 0;  // the partial bit is the sign bit
          for (int32_t e : entries) {
            if ((e & ~kTilePlanPartial) == kt) {
              listed = true;
              entry = e;
            }
          }
          bool any = false, all = true;
          for (int64_t i = qt * tile_q; i < std::min((qt + 1) * tile_q, p.seq_len_q); ++i) {
            for (int64_t j = kt * tile_kv; j < std::min((kt + 1) * tile_kv, p.seq_len_kv); ++j) {
              const bool k = full.Keeps(b, h, i, j);
              any = any || k;
              all = all && k;
            }
          }
          const std::string where = "b " + std::to_string(b) + " h " + std::to_string(h) +
                                    " tile " + std::to_string(qt) + "," + std::to_string(kt);
          if (!listed) {
            EXPECT_FALSE(any) << where << ": a tile with a kept pair is left out";
            ++skipped;
          } else if ((entry & kTilePlanPartial) == 0) {
            EXPECT_TRUE(all) << where << ": a tile not marked partial hides a pair";
            ++whole;
          } else {
            ++partial;
          }
        }
      }
    }
  }
  // The cases are chosen so that every kind of tile shows up.
  EXPECT_GT(skipped, 0);
  EXPECT_GT(partial, 0);
  (void)whole;
}

TEST(TilePlanFromClassesTest, EveryMaskWithAMaskModThatIgnoresTheHead) {
  for (MaskKind kind : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow,
                        MaskKind::kBlockSparse, MaskKind::kProbabilisticBlockSparse}) {
    SCOPED_TRACE(static_cast<int>(kind));
    Problem p = Base(kind);
    p.mask_mod = "kv < 4 || (q - kv < 30 && kv % 16 < 12)";
    ExpectPlanMatchesPairs(p, 16, 8, false);
  }
}

TEST(TilePlanFromClassesTest, EveryMaskWithAMaskModThatReadsTheHead) {
  for (MaskKind kind : {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow,
                        MaskKind::kBlockSparse, MaskKind::kProbabilisticBlockSparse}) {
    SCOPED_TRACE(static_cast<int>(kind));
    Problem p = Base(kind);
    p.mask_mod = "(kv / 16 + h + b) % 3 != 0 && q >= kv - 20";
    ExpectPlanMatchesPairs(p, 8, 16, true);
  }
}

TEST(TilePlanFromClassesTest, FullTilesOfBothStayWhole) {
  // No mask and a mask_mod that keeps everything: every tile listed, none partial.
  Problem p = NormalizeProblem(Base(MaskKind::kNone));
  p.mask_mod = "kv >= 0";
  const int64_t q_tiles = CeilDiv(45, 16), kv_tiles = CeilDiv(70, 32);
  absl::StatusOr<TilePlan> plan =
      BuildTilePlanFromClasses(p, 16, 32, std::vector<uint8_t>(q_tiles * kv_tiles, 2), 1, 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->tiles.size(), static_cast<size_t>(q_tiles * kv_tiles));
  for (int32_t e : plan->tiles) EXPECT_EQ(e & kTilePlanPartial, 0);
  // Classes of the wrong size are refused.
  EXPECT_FALSE(BuildTilePlanFromClasses(p, 16, 32, std::vector<uint8_t>(3, 2), 1, 1).ok());
  EXPECT_FALSE(
      BuildTilePlanFromClasses(p, 16, 32, std::vector<uint8_t>(q_tiles * kv_tiles, 2), 3, 1).ok());
}

}  // namespace
}  // namespace attnbench
