// Which K/V tiles each query tile keeps under a block-sparse mask (or any mask with a mask_mod:
// BuildTilePlanFromClasses), for kernels that walk lists of
// kept tiles instead of testing every tile (cuda_flash's Hopper kernel). Built once per problem
// from the mask's own tile coverage (MaskEvaluator::Coverage), so the lists agree with §3 by
// construction: tiles that keep no pair are left out, and tiles that keep only some are marked so
// the kernel tests each pair of them.
#ifndef ATTNBENCH_KERNELS_SPEC_TILE_PLAN_H_
#define ATTNBENCH_KERNELS_SPEC_TILE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"

namespace attnbench {

struct TilePlan {
  int64_t tile_q = 0;   // query rows per tile
  int64_t tile_kv = 0;  // keys per tile
  int64_t q_tiles = 0;
  int64_t kv_tiles = 0;
  // One list set per (batch, output head) (the probabilistic mask draws per head), else one
  // shared by all.
  bool per_head = false;
  // For list set p (p = b * H_out + h, or 0 when shared) and query tile qt, the kept K/V tiles
  // are tiles[offsets[p * q_tiles + qt] .. offsets[p * q_tiles + qt + 1]), ascending; an entry
  // is the K/V tile index, with kTilePlanPartial set when the tile keeps only some pairs.
  std::vector<int32_t> tiles;
  std::vector<int64_t> offsets;
};
inline constexpr int32_t kTilePlanPartial = -2147483647 - 1;  // the sign bit

// Bytes the plan of a normalized, valid block-sparse problem, or of one with a mask_mod, can take
// at most (every tile kept; a list set per (batch, head) under a mask_mod, which may read them).
uint64_t TilePlanMaxBytes(const Problem& problem, int64_t tile_q, int64_t tile_kv);

// The plan for tiles of tile_q x tile_kv pairs, using up to `threads` threads. INVALID_ARGUMENT
// when the problem's mask is not block-sparse or a tile index would not fit 31 bits.
absl::StatusOr<TilePlan> BuildTilePlan(const Problem& problem, int64_t tile_q, int64_t tile_kv,
                                       int threads);

// The plan of any mask intersected with a mask_mod whose tiles were classified elsewhere
// (cuda_flash evaluates the mask_mod over every pair of every tile on the GPU): spec.mask's own
// coverage (without the mask_mod) intersected with `classes`, bytes [class_lists][q_tiles]
// [kv_tiles] that are 0 where the mask_mod keeps no pair of the tile, 1 some, 2 every pair, with
// class_lists 1 (the same classes for every (batch, output head)) or batch * output heads. The
// plan has a list set per (batch, output head) when either the classes or spec.mask (the
// probabilistic one) differ by head. INVALID_ARGUMENT when `classes` has another size.
absl::StatusOr<TilePlan> BuildTilePlanFromClasses(const Problem& problem, int64_t tile_q,
                                                  int64_t tile_kv,
                                                  const std::vector<uint8_t>& classes,
                                                  int64_t class_lists, int threads);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_TILE_PLAN_H_
