#include "kernels/spec/mask.h"

#include <algorithm>
#include <cmath>

#include "kernels/expr/tile_bounds.h"
#include "kernels/spec/philox.h"

namespace attnbench {

MaskEvaluator::MaskEvaluator(const Problem& problem)
    : kind_(problem.mask.kind),
      seq_q_(problem.seq_len_q),
      seq_kv_(problem.seq_len_kv),
      offset_(problem.seq_len_kv - problem.seq_len_q) {
  const Mask& m = problem.mask;
  has_left_ = m.left_tokens.has_value();
  has_right_ = m.right_tokens.has_value();
  left_ = m.left_tokens.value_or(0);
  right_ = m.right_tokens.value_or(0);
  if (block_mask()) {
    bq_ = std::max<int64_t>(1, m.query_block_tokens);
    bk_ = std::max<int64_t>(1, m.kv_block_tokens);
    block_cols_ = (seq_kv_ + bk_ - 1) / bk_;
  }
  if (kind_ == MaskKind::kBlockSparse) {
    block_causal_ = m.intersect_causal;
    for (const Block& b : m.blocks) selected_.push_back(b.query_block * block_cols_ + b.kv_block);
    std::sort(selected_.begin(), selected_.end());
    selected_.erase(std::unique(selected_.begin(), selected_.end()), selected_.end());
  } else if (kind_ == MaskKind::kProbabilisticBlockSparse) {
    block_causal_ = true;
    c_coefficient_ = m.c_coefficient;
    alpha_ = m.alpha;
    seed_ = m.seed;
  }
  if (problem.mask_mod.has_value()) {
    // The problem was validated, so both succeed; a failure leaves the mask without its
    // expression rather than crashing a caller that skipped validation.
    absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(problem);
    absl::StatusOr<HeadConfig> heads = ResolveHeads(problem.layout);
    if (exprs.ok() && *exprs != nullptr && (*exprs)->mask_mod.has_value() && heads.ok()) {
      exprs_ = *std::move(exprs);
      head_map_ = heads->map;
      evaluators_ = std::make_unique<expr::ThreadEvaluators<float>>(*exprs_->mask_mod, exprs_->aux);
    }
  }
}

MaskEvaluator::~MaskEvaluator() = default;

expr::Bindings MaskEvaluator::Bind(int64_t b, int h, int64_t i) const {
  expr::Bindings bind;
  bind.b = b;
  bind.h = h;
  bind.q = i + offset_;
  bind.hq = head_map_[h].query_head;
  bind.hkv = head_map_[h].kv_head;
  return bind;
}

bool MaskEvaluator::Keeps(int64_t b, int h, int64_t i, int64_t j) const {
  if (!BaseKeeps(b, h, i, j)) return false;
  return evaluators_ == nullptr || evaluators_->Get().Keeps(Bind(b, h, i), j);
}

TileCoverage MaskEvaluator::Coverage(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0,
                                     int64_t j1) const {
  const TileCoverage base = BaseCoverage(b, h, i0, i1, j0, j1);
  if (evaluators_ == nullptr || base == TileCoverage::kNone) return base;
  switch (expr::MaskTileBounds(*exprs_->mask_mod, exprs_->aux, Bind(b, h, i0), i0 + offset_,
                               i1 + offset_, j0, j1)) {
    case expr::TileKeeps::kNone:
      return TileCoverage::kNone;
    case expr::TileKeeps::kAll:
      return base;
    case expr::TileKeeps::kSome:
      break;
  }
  return TileCoverage::kPartial;
}

void MaskEvaluator::FillTile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                             uint8_t* keep) const {
  BaseFillTile(b, h, i0, i1, j0, j1, keep);
  if (evaluators_ == nullptr) return;
  const int64_t width = j1 - j0;
  expr::Evaluator<float>& eval = evaluators_->Get();
  std::vector<uint8_t> row(width);
  for (int64_t i = i0; i < i1; ++i) {
    eval.Mask(Bind(b, h, i), j0, width, row.data());
    uint8_t* out = keep + (i - i0) * width;
    for (int64_t c = 0; c < width; ++c) out[c] = out[c] && row[c];
  }
}

bool MaskEvaluator::BlockSelected(int64_t b, int h, int64_t r, int64_t c) const {
  if (kind_ == MaskKind::kBlockSparse) {
    return std::binary_search(selected_.begin(), selected_.end(), r * block_cols_ + c);
  }
  if (kind_ != MaskKind::kProbabilisticBlockSparse) return true;
  const int64_t d = FloorDiv(r * bq_ + offset_, bk_) - c;
  if (d <= 0) return true;
  const PhiloxCounter w = Philox4x32_10({static_cast<uint32_t>(c), static_cast<uint32_t>(r),
                                         static_cast<uint32_t>(h), static_cast<uint32_t>(b)},
                                        PhiloxKeyFromSeed(seed_));
  const double p = std::min(1.0, c_coefficient_ / std::pow(1.0 + static_cast<double>(d), alpha_));
  return static_cast<double>(w[0]) / 4294967296.0 < p;
}

bool MaskEvaluator::BaseKeeps(int64_t b, int h, int64_t i, int64_t j) const {
  const int64_t pos = i + offset_;
  switch (kind_) {
    case MaskKind::kNone:
      return true;
    case MaskKind::kCausal:
      return j <= pos;
    case MaskKind::kSlidingWindow:
      return (!has_left_ || j >= pos - left_) && (!has_right_ || j <= pos + right_);
    case MaskKind::kBlockSparse:
    case MaskKind::kProbabilisticBlockSparse:
      if (block_causal_ && j > pos) return false;
      return BlockSelected(b, h, i / bq_, j / bk_);
  }
  return false;
}

TileCoverage MaskEvaluator::CausalCoverage(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
  if (j1 - 1 <= i0 + offset_) return TileCoverage::kAll;
  if (j0 > i1 - 1 + offset_) return TileCoverage::kNone;
  return TileCoverage::kPartial;
}

TileCoverage MaskEvaluator::BaseCoverage(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0,
                                         int64_t j1) const {
  switch (kind_) {
    case MaskKind::kNone:
      return TileCoverage::kAll;
    case MaskKind::kCausal:
      return CausalCoverage(i0, i1, j0, j1);
    case MaskKind::kSlidingWindow: {
      // Row i keeps [i' - L, i' + R]; the band moves right as i grows.
      if ((has_left_ && j1 - 1 < i0 + offset_ - left_) ||
          (has_right_ && j0 > i1 - 1 + offset_ + right_)) {
        return TileCoverage::kNone;
      }
      if ((!has_left_ || j0 >= i1 - 1 + offset_ - left_) &&
          (!has_right_ || j1 - 1 <= i0 + offset_ + right_)) {
        return TileCoverage::kAll;
      }
      return TileCoverage::kPartial;
    }
    case MaskKind::kBlockSparse:
    case MaskKind::kProbabilisticBlockSparse: {
      if (block_causal_ && CausalCoverage(i0, i1, j0, j1) == TileCoverage::kNone) {
        return TileCoverage::kNone;
      }
      bool any = false;
      bool all = true;
      for (int64_t r = i0 / bq_; r <= (i1 - 1) / bq_; ++r) {
        const int64_t ri0 = std::max(i0, r * bq_);
        const int64_t ri1 = std::min(i1, (r + 1) * bq_);
        for (int64_t c = j0 / bk_; c <= (j1 - 1) / bk_; ++c) {
          const int64_t cj0 = std::max(j0, c * bk_);
          const int64_t cj1 = std::min(j1, (c + 1) * bk_);
          TileCoverage sub =
              block_causal_ ? CausalCoverage(ri0, ri1, cj0, cj1) : TileCoverage::kAll;
          if (sub != TileCoverage::kNone && !BlockSelected(b, h, r, c)) sub = TileCoverage::kNone;
          any = any || sub != TileCoverage::kNone;
          all = all && sub == TileCoverage::kAll;
        }
      }
      return !any ? TileCoverage::kNone : all ? TileCoverage::kAll : TileCoverage::kPartial;
    }
  }
  return TileCoverage::kPartial;
}

void MaskEvaluator::BaseFillTile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                                 uint8_t* keep) const {
  const int64_t width = j1 - j0;
  if (!block_mask()) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) keep[(i - i0) * width + (j - j0)] = BaseKeeps(b, h, i, j);
    }
    return;
  }
  // One decision per block touched, not per element: probabilistic decisions cost a Philox call.
  const int64_t r0 = i0 / bq_;
  const int64_t c0 = j0 / bk_;
  const int64_t nc = (j1 - 1) / bk_ - c0 + 1;
  std::vector<uint8_t> selected(((i1 - 1) / bq_ - r0 + 1) * nc);
  for (size_t k = 0; k < selected.size(); ++k) {
    selected[k] =
        BlockSelected(b, h, r0 + static_cast<int64_t>(k) / nc, c0 + static_cast<int64_t>(k) % nc);
  }
  for (int64_t i = i0; i < i1; ++i) {
    const uint8_t* row_blocks = &selected[(i / bq_ - r0) * nc];
    for (int64_t j = j0; j < j1; ++j) {
      keep[(i - i0) * width + (j - j0)] =
          row_blocks[j / bk_ - c0] && (!block_causal_ || j <= i + offset_);
    }
  }
}

bool KeepsPair(const Problem& problem, int64_t b, int h, int64_t i, int64_t j) {
  return MaskEvaluator(problem).Keeps(b, h, i, j);
}

}  // namespace attnbench
