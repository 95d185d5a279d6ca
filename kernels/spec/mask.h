// The masks of §3 as predicates: whether a (query i, key j) pair is kept, whether a whole
// [i0, i1) x [j0, j1) tile is hidden, partly kept or fully kept (so kernels can skip or skip the
// per-element test), and the block decisions of the block-sparse masks. Query i sits at absolute
// position i' = i + (S_kv - S_q) (bottom-right alignment).
//
// The probabilistic block decision, exactly: for block row r and block column c,
//   d = floor((r * query_block_tokens + S_kv - S_q) / kv_block_tokens) - c
// kept when d <= 0; otherwise (w0, ...) = Philox4x32-10((uint32 c, uint32 r, uint32 h, uint32 b),
// key = (mask.seed & 0xffffffff, mask.seed >> 32)) and kept when w0 / 2^32 <
// min(1, c_coefficient / (1 + d)^alpha) (evaluated in double). Kept blocks are then intersected
// with causal (j <= i').
#ifndef ATTNBENCH_KERNELS_SPEC_MASK_H_
#define ATTNBENCH_KERNELS_SPEC_MASK_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/expr/evaluate.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/problem.h"

namespace attnbench {

enum class TileCoverage { kNone, kPartial, kAll };

// Built once per problem (it indexes the explicit block list and compiles the mask_mod); cheap
// to query from many threads. Every answer intersects spec.mask with spec.mask_mod, which is
// evaluated in float32 on every backend so that all of them keep exactly the same pairs.
class MaskEvaluator {
 public:
  explicit MaskEvaluator(const Problem& problem);
  ~MaskEvaluator();
  MaskEvaluator(MaskEvaluator&&) = default;
  MaskEvaluator& operator=(MaskEvaluator&&) = default;

  bool Keeps(int64_t b, int h, int64_t i, int64_t j) const;

  // Block masks only: whether block (r, c) is selected, before the causal intersection.
  bool BlockSelected(int64_t b, int h, int64_t r, int64_t c) const;

  // Whether the tile [i0, i1) x [j0, j1) (non-empty, within S_q x S_kv) keeps no pair, some, or
  // every pair.
  TileCoverage Coverage(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const;

  // keep[(i - i0) * (j1 - j0) + (j - j0)] = Keeps(b, h, i, j), for the whole tile.
  void FillTile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                uint8_t* keep) const;

  // Whether the problem has a mask_mod, and whether it reads the batch or head: callers that
  // count one (b, h) for all must then look at each.
  bool has_mask_mod() const { return evaluators_ != nullptr; }
  bool mask_mod_varies_by_batch() const { return exprs_ && exprs_->mask_mod->UsesBatch(); }
  bool mask_mod_varies_by_head() const { return exprs_ && exprs_->mask_mod->UsesHead(); }

  // i' - j offset: S_kv - S_q.
  int64_t offset() const { return offset_; }
  bool block_mask() const {
    return kind_ == MaskKind::kBlockSparse || kind_ == MaskKind::kProbabilisticBlockSparse;
  }
  // Whether kept blocks are intersected with causal.
  bool block_causal() const { return block_causal_; }
  int64_t query_block_tokens() const { return bq_; }
  int64_t kv_block_tokens() const { return bk_; }

 private:
  // spec.mask alone.
  bool BaseKeeps(int64_t b, int h, int64_t i, int64_t j) const;
  TileCoverage BaseCoverage(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1) const;
  void BaseFillTile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                    uint8_t* keep) const;
  expr::Bindings Bind(int64_t b, int h, int64_t i) const;

  // Coverage of causal (j <= i + offset) over a tile.
  TileCoverage CausalCoverage(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const;

  MaskKind kind_;
  int64_t seq_q_;
  int64_t seq_kv_;
  int64_t offset_;
  bool has_left_ = false;
  bool has_right_ = false;
  int64_t left_ = 0;
  int64_t right_ = 0;
  int64_t bq_ = 1;
  int64_t bk_ = 1;
  int64_t block_cols_ = 1;
  bool block_causal_ = false;
  std::vector<int64_t> selected_;  // sorted r * block_cols + c of the explicit list
  double c_coefficient_ = 0;
  double alpha_ = 0;
  uint64_t seed_ = 0;
  // mask_mod only.
  std::shared_ptr<const ProblemExpressions> exprs_;
  std::vector<HeadPair> head_map_;
  std::unique_ptr<expr::ThreadEvaluators<float>> evaluators_;
};

// Keeps(b, h, i, j) of a normalized, valid problem, without building an evaluator up front.
bool KeepsPair(const Problem& problem, int64_t b, int h, int64_t i, int64_t j);

// floor(a / b) for b > 0 and any sign of a.
inline int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_MASK_H_
