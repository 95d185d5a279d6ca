#include "kernels/spec/tile_plan.h"

#include <algorithm>
#include <functional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool BlockMask(const Problem& p) {
  return p.mask.kind == MaskKind::kBlockSparse ||
         p.mask.kind == MaskKind::kProbabilisticBlockSparse;
}

}  // namespace

uint64_t TilePlanMaxBytes(const Problem& problem, int64_t tile_q, int64_t tile_kv) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok() || tile_q <= 0 || tile_kv <= 0) return 0;
  const uint64_t lists =
      problem.mask.kind == MaskKind::kProbabilisticBlockSparse || problem.mask_mod.has_value()
          ? static_cast<uint64_t>(shapes->batch) * shapes->heads.num_output_heads
          : 1;
  const uint64_t q_tiles = CeilDiv(shapes->seq_q, tile_q);
  const uint64_t kv_tiles = CeilDiv(shapes->seq_kv, tile_kv);
  return lists * q_tiles * (kv_tiles * sizeof(int32_t) + sizeof(int64_t)) + sizeof(int64_t);
}

namespace {

// The plan for tiles of tile_q x tile_kv pairs, one list set per (batch, output head) when
// per_head, from coverage(b, h, i0, i1, j0, j1).
absl::StatusOr<TilePlan> BuildPlan(
    const ProblemShapes& shapes, int64_t tile_q, int64_t tile_kv, bool per_head,
    const std::function<TileCoverage(int64_t, int, int64_t, int64_t, int64_t, int64_t)>& coverage,
    int threads) {
  TilePlan plan;
  plan.tile_q = tile_q;
  plan.tile_kv = tile_kv;
  plan.q_tiles = CeilDiv(shapes.seq_q, tile_q);
  plan.kv_tiles = CeilDiv(shapes.seq_kv, tile_kv);
  if (plan.kv_tiles >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError("more K/V tiles than a 31-bit index holds");
  }
  plan.per_head = per_head;
  const int heads = shapes.heads.num_output_heads;
  const int64_t lists = plan.per_head ? shapes.batch * heads : 1;
  const int64_t rows = lists * plan.q_tiles;  // (list, query tile) pairs

  // Each worker fills the lists of a contiguous range of rows; the ranges are then joined.
  const int workers =
      static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, rows / 64)));
  std::vector<std::vector<int32_t>> parts(workers);
  std::vector<std::vector<int64_t>> counts(workers);
  auto work = [&](int w) {
    const int64_t begin = rows * w / workers;
    const int64_t end = rows * (w + 1) / workers;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t list = row / plan.q_tiles;
      const int64_t qt = row % plan.q_tiles;
      const int64_t b = list / heads;
      const int h = static_cast<int>(list % heads);
      const int64_t i0 = qt * tile_q;
      const int64_t i1 = std::min(shapes.seq_q, i0 + tile_q);
      int64_t kept = 0;
      for (int64_t t = 0; t < plan.kv_tiles; ++t) {
        const int64_t j0 = t * tile_kv;
        const int64_t j1 = std::min(shapes.seq_kv, j0 + tile_kv);
        const TileCoverage cov = coverage(b, h, i0, i1, j0, j1);
        if (cov == TileCoverage::kNone) continue;
        parts[w].push_back(static_cast<int32_t>(t) |
                           (cov == TileCoverage::kPartial ? kTilePlanPartial : 0));
        ++kept;
      }
      counts[w].push_back(kept);
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (std::thread& t : pool) t.join();

  plan.offsets.reserve(rows + 1);
  plan.offsets.push_back(0);
  for (int w = 0; w < workers; ++w) {
    for (int64_t c : counts[w]) plan.offsets.push_back(plan.offsets.back() + c);
    plan.tiles.insert(plan.tiles.end(), parts[w].begin(), parts[w].end());
  }
  return plan;
}

}  // namespace

absl::StatusOr<TilePlan> BuildTilePlan(const Problem& problem, int64_t tile_q, int64_t tile_kv,
                                       int threads) {
  if (!BlockMask(problem)) {
    return absl::InvalidArgumentError("a tile plan needs a block-sparse mask");
  }
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  const MaskEvaluator mask(problem);
  return BuildPlan(
      *shapes, tile_q, tile_kv, problem.mask.kind == MaskKind::kProbabilisticBlockSparse,
      [&mask](int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
        return mask.Coverage(b, h, i0, i1, j0, j1);
      },
      threads);
}

absl::StatusOr<TilePlan> BuildTilePlanFromClasses(const Problem& problem, int64_t tile_q,
                                                  int64_t tile_kv,
                                                  const std::vector<uint8_t>& classes,
                                                  int64_t class_lists, int threads) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  if (tile_q <= 0 || tile_kv <= 0) return absl::InvalidArgumentError("empty tiles");
  const int heads = shapes->heads.num_output_heads;
  const int64_t q_tiles = CeilDiv(shapes->seq_q, tile_q);
  const int64_t kv_tiles = CeilDiv(shapes->seq_kv, tile_kv);
  if ((class_lists != 1 && class_lists != shapes->batch * heads) ||
      static_cast<int64_t>(classes.size()) != class_lists * q_tiles * kv_tiles) {
    return absl::InvalidArgumentError("mask_mod tile classes of the wrong size");
  }
  // spec.mask alone: the mask_mod's part is in `classes`.
  Problem base_problem = problem;
  base_problem.mask_mod.reset();
  const MaskEvaluator base(base_problem);
  const bool per_head = class_lists > 1 || problem.mask.kind == MaskKind::kProbabilisticBlockSparse;
  return BuildPlan(
      *shapes, tile_q, tile_kv, per_head,
      [&](int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
        const int64_t list = class_lists > 1 ? b * heads + h : 0;
        const uint8_t c = classes[(list * q_tiles + i0 / tile_q) * kv_tiles + j0 / tile_kv];
        if (c == 0) return TileCoverage::kNone;
        const TileCoverage cov = base.Coverage(b, h, i0, i1, j0, j1);
        if (c == 2 || cov == TileCoverage::kNone) return cov;
        return TileCoverage::kPartial;
      },
      threads);
}

}  // namespace attnbench
