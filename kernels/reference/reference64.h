// The float64 oracle: one output row at a time, straight from the formulas of docs/variants.md
// (§1 core, §3 masks, §4 modifiers and client expressions, §6 layer), with no tiling, no online softmax and no
// quantization, so that it is obviously right and every backend is judged against it. A NaN
// score makes its whole row NaN (never a silently masked key).
//
// Storage follows the dtype: inputs are taken as given (already rounded); at layer scope the
// projected Q, K, V and the attention output O are rounded to the dtype before use, as a layer
// that stores them in that dtype does, and everything else is double.
#ifndef ATTNBENCH_KERNELS_REFERENCE_REFERENCE64_H_
#define ATTNBENCH_KERNELS_REFERENCE_REFERENCE64_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/expr/evaluate.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

class Reference64 {
 public:
  // The problem must be normalized and valid, the inputs those GenerateInputs returns for it
  // (shapes are checked). Both must outlive the oracle.
  static absl::StatusOr<Reference64> Create(const Problem& problem, const AttentionInputs& inputs);

  const ProblemShapes& shapes() const { return shapes_; }

  // Output row `row` in [0, shapes().rows_total), row_width values. Core scope: row
  // (b * H_out + h) * S_q + i is O[b, i, h, :]; layer scope: row b * S + i is Y[b, i, :].
  // Rows are fastest in order of (b, kv head): keys of the last (b, kv head) are cached.
  std::vector<double> Row(int64_t row);

  // The batch and key/value head a row reads (for ordering rows to reuse the cache).
  std::pair<int64_t, int> RowKeyGroup(int64_t row) const;

 private:
  Reference64(const Problem& problem, const AttentionInputs& inputs, ProblemShapes shapes,
              std::shared_ptr<const ProblemExpressions> exprs);

  // Keys (after RoPE) and values of (b, kv head) as double, [S_kv, D].
  struct KeyValues {
    std::vector<double> keys;
    std::vector<double> values;
  };
  const KeyValues& KeyValuesFor(int64_t b, int kv_head);
  // Query row of (b, i, query head) as double, RoPE applied.
  std::vector<double> QueryRow(int64_t b, int64_t i, int query_head) const;
  // O[b, i, h, :] of the core computation.
  std::vector<double> CoreRow(int64_t b, int h, int64_t i);
  // Projection of X[b, t, :] through columns [col0, col0 + n) of w, rounded to the dtype.
  std::vector<double> Project(int64_t b, int64_t t, const FloatTensor& w, int64_t col0,
                              int64_t n) const;

  const Problem* problem_;
  const AttentionInputs* inputs_;
  ProblemShapes shapes_;
  MaskEvaluator mask_;
  std::vector<double> inv_freq_;
  std::vector<double> slopes_;
  double scale_;
  // The score_mod, interpreted in double (the mask_mod is in mask_, in float on every backend).
  std::shared_ptr<const ProblemExpressions> exprs_;
  std::unique_ptr<expr::Evaluator<double>> score_mod_;
  // Cached key/values of one batch (all kv heads used so far at layer scope, one at core scope).
  int64_t cached_batch_ = -1;
  std::map<int, KeyValues> cache_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_REFERENCE64_H_
