#include "kernels/spec/tile_plan.h"

#include <algorithm>
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
  const uint64_t lists = problem.mask.kind == MaskKind::kProbabilisticBlockSparse
                             ? static_cast<uint64_t>(shapes->batch) * shapes->heads.num_output_heads
                             : 1;
  const uint64_t q_tiles = CeilDiv(shapes->seq_q, tile_q);
  const uint64_t kv_tiles = CeilDiv(shapes->seq_kv, tile_kv);
  return lists * q_tiles * (kv_tiles * sizeof(int32_t) + sizeof(int64_t)) + sizeof(int64_t);
}

absl::StatusOr<TilePlan> BuildTilePlan(const Problem& problem, int64_t tile_q, int64_t tile_kv,
                                       int threads) {
  if (!BlockMask(problem)) {
    return absl::InvalidArgumentError("a tile plan needs a block-sparse mask");
  }
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  TilePlan plan;
  plan.tile_q = tile_q;
  plan.tile_kv = tile_kv;
  plan.q_tiles = CeilDiv(shapes->seq_q, tile_q);
  plan.kv_tiles = CeilDiv(shapes->seq_kv, tile_kv);
  if (plan.kv_tiles >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError("more K/V tiles than a 31-bit index holds");
  }
  plan.per_head = problem.mask.kind == MaskKind::kProbabilisticBlockSparse;
  const int heads = shapes->heads.num_output_heads;
  const int64_t lists = plan.per_head ? shapes->batch * heads : 1;
  const int64_t rows = lists * plan.q_tiles;  // (list, query tile) pairs

  // Each worker fills the lists of a contiguous range of rows; the ranges are then joined.
  const MaskEvaluator mask(problem);
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
      const int64_t i1 = std::min(shapes->seq_q, i0 + tile_q);
      int64_t kept = 0;
      for (int64_t t = 0; t < plan.kv_tiles; ++t) {
        const int64_t j0 = t * tile_kv;
        const int64_t j1 = std::min(shapes->seq_kv, j0 + tile_kv);
        const TileCoverage cov = mask.Coverage(b, h, i0, i1, j0, j1);
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

}  // namespace attnbench
