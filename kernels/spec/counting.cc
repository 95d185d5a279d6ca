#include "kernels/spec/counting.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/spec/cache_format.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

// GCC and Clang have 128-bit integers; __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef __int128 Wide;

// sum over i in [i0, i1) of clamp(i + a, 0, w), in closed form (w >= 1).
Wide SumClamp(int64_t i0, int64_t i1, int64_t a, int64_t w) {
  if (i1 <= i0) return 0;
  const int64_t mid_begin = std::clamp<int64_t>(1 - a, i0, i1);   // first i with i + a >= 1
  const int64_t high_begin = std::clamp<int64_t>(w - a, i0, i1);  // first i with i + a >= w
  Wide sum = static_cast<Wide>(i1 - high_begin) * w;
  const int64_t n = high_begin - mid_begin;
  if (n > 0) {
    const Wide first = static_cast<Wide>(mid_begin) + a;
    const Wide last = static_cast<Wide>(high_begin) - 1 + a;
    sum += (first + last) * n / 2;
  }
  return sum;
}

// Pairs of rows [i0, i1) x columns [j0, j1) kept by causal (j <= i + offset).
Wide CausalPairs(int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t offset) {
  if (j1 <= j0) return 0;
  return SumClamp(i0, i1, offset - j0 + 1, j1 - j0);
}

Wide ExplicitBlockPairs(const Problem& p, const MaskEvaluator& eval) {
  const int64_t bq = p.mask.query_block_tokens;
  const int64_t bk = p.mask.kv_block_tokens;
  const int64_t cols = (p.seq_len_kv + bk - 1) / bk;
  std::vector<int64_t> blocks;
  for (const Block& b : p.mask.blocks) blocks.push_back(b.query_block * cols + b.kv_block);
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  Wide n = 0;
  for (int64_t key : blocks) {
    const int64_t r = key / cols;
    const int64_t c = key % cols;
    const int64_t i0 = r * bq, i1 = std::min(p.seq_len_q, i0 + bq);
    const int64_t j0 = c * bk, j1 = std::min(p.seq_len_kv, j0 + bk);
    n += eval.block_causal() ? CausalPairs(i0, i1, j0, j1, eval.offset())
                             : static_cast<Wide>(i1 - i0) * (j1 - j0);
  }
  return n;
}

Wide ProbabilisticPairs(const Problem& p, const MaskEvaluator& eval, int64_t b, int h) {
  const int64_t bq = p.mask.query_block_tokens;
  const int64_t bk = p.mask.kv_block_tokens;
  const int64_t rows = (p.seq_len_q + bq - 1) / bq;
  const int64_t cols = (p.seq_len_kv + bk - 1) / bk;
  Wide n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i0 = r * bq, i1 = std::min(p.seq_len_q, i0 + bq);
    // Blocks from the diagonal column on (d <= 0) are kept, intersected with causal.
    const int64_t diagonal = FloorDiv(i0 + eval.offset(), bk);
    const int64_t band_start = std::clamp<int64_t>(diagonal, 0, cols);
    n += CausalPairs(i0, i1, band_start * bk, p.seq_len_kv, eval.offset());
    // Blocks left of it (d > 0) lie entirely below the diagonal: kept whole or not at all.
    for (int64_t c = 0; c < band_start; ++c) {
      if (eval.BlockSelected(b, h, r, c)) {
        n += static_cast<Wide>(i1 - i0) * (std::min(p.seq_len_kv, (c + 1) * bk) - c * bk);
      }
    }
  }
  return n;
}

// Any mask, from its own tile coverage: whole tiles of 64 x 64 pairs where the mask keeps all or
// none, pair by pair where it keeps some. What a mask without a closed form below is counted by.
Wide CoveragePairs(const Problem& p, const MaskEvaluator& eval, int64_t b, int h) {
  constexpr int64_t kTile = 64;
  Wide n = 0;
  std::vector<uint8_t> keep(kTile * kTile);
  for (int64_t i0 = 0; i0 < p.seq_len_q; i0 += kTile) {
    const int64_t i1 = std::min(p.seq_len_q, i0 + kTile);
    for (int64_t j0 = 0; j0 < p.seq_len_kv; j0 += kTile) {
      const int64_t j1 = std::min(p.seq_len_kv, j0 + kTile);
      switch (eval.Coverage(b, h, i0, i1, j0, j1)) {
        case TileCoverage::kNone:
          break;
        case TileCoverage::kAll:
          n += static_cast<Wide>(i1 - i0) * (j1 - j0);
          break;
        case TileCoverage::kPartial:
          eval.FillTile(b, h, i0, i1, j0, j1, keep.data());
          for (int64_t k = 0; k < (i1 - i0) * (j1 - j0); ++k) n += keep[k];
          break;
      }
    }
  }
  return n;
}

Wide KeptPairsWide(const Problem& p, const MaskEvaluator& eval, int64_t b, int h) {
  const int64_t sq = p.seq_len_q;
  const int64_t skv = p.seq_len_kv;
  const int64_t offset = skv - sq;
  if (eval.has_mask_mod()) return CoveragePairs(p, eval, b, h);  // no closed form
  switch (p.mask.kind) {
    case MaskKind::kNone:
      return static_cast<Wide>(sq) * skv;
    case MaskKind::kCausal:
      return CausalPairs(0, sq, 0, skv, offset);
    case MaskKind::kSlidingWindow: {
      // Row i keeps j in [i' - L, i' + R] within [0, S_kv): (#j <= i' + R) - (#j <= i' - L - 1).
      const int64_t unbounded = sq + skv;
      const int64_t right = p.mask.right_tokens.value_or(unbounded);
      const int64_t left = p.mask.left_tokens.value_or(unbounded);
      return SumClamp(0, sq, offset + right + 1, skv) - SumClamp(0, sq, offset - left, skv);
    }
    case MaskKind::kBlockSparse:
      return ExplicitBlockPairs(p, eval);
    case MaskKind::kProbabilisticBlockSparse:
      return ProbabilisticPairs(p, eval, b, h);
  }
  return CoveragePairs(p, eval, b, h);  // a mask with no closed form here
}

constexpr Wide kMaxU64 = static_cast<Wide>(std::numeric_limits<uint64_t>::max());

// Random draws CountWork makes for a probabilistic mask, at most one per block left of the
// diagonal band per (batch, head): batch x heads x block rows x block columns, saturating.
Wide ProbabilisticDrawBound(const Problem& p, int64_t heads) {
  const int64_t rows = (p.seq_len_q + p.mask.query_block_tokens - 1) / p.mask.query_block_tokens;
  const int64_t cols = (p.seq_len_kv + p.mask.kv_block_tokens - 1) / p.mask.kv_block_tokens;
  Wide n = 1;
  for (int64_t factor : {p.batch_size, heads, rows, cols}) {
    n *= factor;
    if (n > kMaxProbabilisticDraws) return n;  // each factor is below 2^63: no overflow yet
  }
  return n;
}

}  // namespace

uint64_t KeptPairsFromCoverage(const Problem& problem, int64_t batch, int output_head) {
  const Wide n = CoveragePairs(problem, MaskEvaluator(problem), batch, output_head);
  return n > kMaxU64 ? std::numeric_limits<uint64_t>::max() : static_cast<uint64_t>(n);
}

uint64_t KeptPairs(const Problem& problem, int64_t batch, int output_head) {
  const MaskEvaluator eval(problem);
  const Wide n = KeptPairsWide(problem, eval, batch, output_head);
  return n > kMaxU64 ? std::numeric_limits<uint64_t>::max() : static_cast<uint64_t>(n);
}

double LayerProjectionFlops(const ProblemShapes& s) {
  if (!s.layer) return 0;
  const double tokens = static_cast<double>(s.batch) * static_cast<double>(s.seq_q);
  const double dm = static_cast<double>(s.d_model);
  return 2.0 * tokens * dm *
             static_cast<double>(s.heads.num_query_heads * s.dim_qk +
                                 s.heads.num_kv_heads * s.dim_qk + s.heads.num_kv_heads * s.dim_v) +
         2.0 * tokens * static_cast<double>(s.heads.num_output_heads * s.dim_v) * dm;
}

absl::StatusOr<WorkCounts> CountWork(const Problem& p) {
  absl::StatusOr<ProblemShapes> shapes_or = ShapesOf(p);
  if (!shapes_or.ok()) return shapes_or.status();
  const ProblemShapes& s = *shapes_or;
  const int64_t heads = s.heads.num_output_heads;
  const MaskEvaluator eval(p);
  Wide kept = 0;
  if (p.mask.kind == MaskKind::kProbabilisticBlockSparse) {
    // Checked before drawing: a huge batch of tiny sequences passes every size rule and would
    // otherwise hold a server thread for hours, uninterruptibly, before any memory limit.
    if (ProbabilisticDrawBound(p, heads) > kMaxProbabilisticDraws) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "spec.mask.probabilistic_block_sparse: counting the kept blocks takes up to ",
          "spec.batch_size x output heads x block rows x block columns random draws, over the ",
          "limit of ", kMaxProbabilisticDraws, "; use larger query_block_tokens/kv_block_tokens ",
          "or fewer sequences"));
    }
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int h = 0; h < heads; ++h) kept += KeptPairsWide(p, eval, b, h);
      if (kept > kMaxU64) break;
    }
  } else if (eval.has_mask_mod()) {
    // A mask_mod that reads b or a head is counted for each value it reads, the rest once.
    const int64_t batches = eval.mask_mod_varies_by_batch() ? s.batch : 1;
    const int64_t head_count = eval.mask_mod_varies_by_head() ? heads : 1;
    const Wide tiles = static_cast<Wide>((p.seq_len_q + 63) / 64) * ((p.seq_len_kv + 63) / 64);
    if (tiles * batches * head_count > kMaxMaskModTiles) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "spec.mask_mod.expression: counting its kept pairs takes ",
          static_cast<uint64_t>(tiles * batches * head_count),
          " tile classifications (64 x 64 pairs per tile", batches > 1 ? ", per batch" : "",
          head_count > 1 ? ", per head" : "", "), over the limit of ", kMaxMaskModTiles));
    }
    for (int64_t b = 0; b < batches; ++b) {
      for (int h = 0; h < head_count; ++h) kept += KeptPairsWide(p, eval, b, h);
    }
    kept = kept * (s.batch / batches) * (heads / head_count);
  } else {
    // Every other mask keeps the same pairs for every (b, h).
    kept = KeptPairsWide(p, eval, 0, 0) * s.batch * heads;
  }
  if (kept > kMaxU64) {
    return absl::InvalidArgumentError(
        "spec: the kept (query, key) pairs over spec.batch_size and all heads overflow 64 bits");
  }
  WorkCounts w;
  w.kept_pairs = static_cast<uint64_t>(kept);
  const bool backward = p.phase == Phase::kBackward;
  const bool step = backward && p.training_step;
  // The backward recomputes P from the saved log-sum-exp: one exponential per kept pair, as
  // many as the forward; a training step makes both passes.
  if (step && kept * 2 > kMaxU64) {
    return absl::InvalidArgumentError(
        "spec: the exponentials of a training step (twice the kept pairs) overflow 64 bits");
  }
  w.exponentials = step ? 2 * w.kept_pairs : w.kept_pairs;
  // Five matmuls against the forward's two (S = Q K^T and dP = dO V^T recomputed, dV = P^T dO,
  // dQ = dS K, dK = dS^T Q), each as large as one of the forward's; a step adds the forward.
  const double pass = step ? 3.5 : backward ? 2.5 : 1.0;
  w.flops =
      pass * 2.0 * static_cast<double>(w.kept_pairs) * static_cast<double>(s.dim_qk + s.dim_v);
  w.flops_flash_convention = pass * 4.0 * static_cast<double>(s.batch) * heads *
                             static_cast<double>(s.seq_q) * static_cast<double>(s.seq_kv) *
                             static_cast<double>(s.dim_qk);
  if (p.mask.kind == MaskKind::kCausal) w.flops_flash_convention /= 2;

  const Wide width = DTypeBytes(p.dtype);
  const Wide q = NumElements(s.query), k = NumElements(s.key), v = NumElements(s.value);
  const Wide o = NumElements(s.core_output);
  Wide bytes = 0;
  if (s.layer) {
    const double forward_projections = LayerProjectionFlops(s);
    // The backward of each projection is two products as large as it (the input's gradient and
    // the weight's); a training step runs the forward's as well.
    const double projection_pass = step ? 3.0 : backward ? 2.0 : 1.0;
    w.projection_flops = projection_pass * forward_projections;
    const Wide weights =
        NumElements(s.w_q) + NumElements(s.w_k) + NumElements(s.w_v) + NumElements(s.w_o);
    const Wide x = NumElements(s.x), y = NumElements(s.output);
    if (backward) {
      // Reads X, the weights, dY and what the forward saved (Q, K, V, O and the log-sum-exp);
      // writes dX and the four weight gradients.
      const Wide lse = static_cast<Wide>(4) * s.batch * heads * s.seq_q;
      bytes = width * (x + weights + y + q + k + v + o) + lse + width * (x + weights);
      // A step's forward reads X and the weights, writes Y and saves Q, K, V, O and the lse.
      if (step) bytes += width * (x + weights + y) + width * (q + k + v + o) + lse;
    } else {
      bytes = width * (x + weights + y);
    }
  } else if (p.phase == Phase::kDecode) {
    Wide cache = 0;
    for (const CacheSegment& seg : CacheSegments(p)) {
      cache +=
          static_cast<Wide>(seg.end - seg.begin) * (CacheRowBytes(seg.format, s.dim_qk, p.dtype) +
                                                    CacheRowBytes(seg.format, s.dim_v, p.dtype));
    }
    bytes = width * (q + o) + cache * s.batch * s.heads.num_kv_heads;
    // A paged cache's page table, an int32 per page of every sequence.
    if (p.kv_cache.paged && p.kv_cache.page_size_tokens > 0) {
      const Wide pages = (static_cast<Wide>(s.seq_kv) + p.kv_cache.page_size_tokens - 1) /
                         p.kv_cache.page_size_tokens;
      bytes += static_cast<Wide>(4) * s.batch * pages;
    }
  } else if (backward) {
    // Reads Q, K, V, O, dO and the float32 log-sum-exp (one per output row); writes dQ, dK, dV.
    const Wide lse = static_cast<Wide>(4) * s.batch * heads * s.seq_q;
    bytes = width * (q + k + v + o + o) + lse + width * (q + k + v);
    // A step's forward first reads Q, K, V and writes O and the log-sum-exp the backward reads.
    if (step) bytes += width * (q + k + v + o) + lse;
  } else {
    // O may be stored wider than the inputs (FP8's bfloat16, §1b).
    bytes = width * (q + k + v) + static_cast<Wide>(DTypeBytes(p.output_dtype)) * o;
  }
  if (bytes > kMaxU64) {
    return absl::InvalidArgumentError("spec: the minimum bytes moved overflow 64 bits");
  }
  w.min_bytes = static_cast<uint64_t>(bytes);
  return w;
}

}  // namespace attnbench
