// Correctness of PHASE_BACKWARD: a backend's dQ, dK and dV, each compared with the float64
// oracle (backward64.h) on all rows or on a seeded sample, each with its own relative error and
// non-finite count over the whole tensor; the run passes only when all three do.
//
// What is compared (CheckOptions as for the forward check):
//   dQ      rows (b, i, query head), D_qk wide, each computed alone by the oracle: every row when
//           options.full or B * S_q * H_q <= max_rows, else max_rows rows drawn from the seed.
//   dK, dV  the rows of whole (b, kv head) groups, since one dK or dV row needs the softmax of
//           every query row of the heads reading its kv head: with c = S_q * n_max query rows per
//           group (n_max: the most output heads reading one kv head), every group when options.full
//           or B * H_kv * c <= max_rows, else max(1, max_rows / c) groups drawn from the seed, all
//           S_kv key rows of each compared.
// So a sampled check costs about max_rows query rows scored against S_kv keys for dQ, and
// max(max_rows, c) of them, visited twice, for dK and dV: at least one whole group, which for
// long sequences dominates (EstimateGradientCheckCost counts it).
//
// At layer scope the check compares dX and the four weight gradients with the layer's float64
// oracle (layer_backward64.h), every row of each whatever the options: a weight's gradient sums
// over every token, so the oracle computes the whole core forward and backward anyway.
#ifndef ATTNBENCH_KERNELS_REFERENCE_GRADIENT_CHECK_H_
#define ATTNBENCH_KERNELS_REFERENCE_GRADIENT_CHECK_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/reference/check.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

// Which rows the check compares (see above).
struct GradientCheckPlan {
  // Flat rows (b * S_q + i) * H_q + qh of dQ, ordered by (b, qh, i) so the oracle reuses keys.
  std::vector<int64_t> dq_rows;
  int64_t dq_rows_total = 0;
  // Groups b * H_kv + kh whose every dK and dV row is compared, ascending.
  std::vector<int64_t> kv_groups;
  int64_t kv_groups_total = 0;
};
GradientCheckPlan PlanGradientCheck(const ProblemShapes& shapes, const CheckOptions& options);

// What the oracle evaluates for a check, for the server's work limit: the kept (h, i, j) pairs
// it visits (dQ rows once; the heads of a compared group twice) and the FLOPs of those visits,
// 2 per multiply-add (a dQ visit: score, dP and the dQ update, 2 (D_qk + D_v); a group's:
// 2 (D_qk + D_v) for the row statistics, then 4 (D_qk + D_v) for the gradients). Kept pairs per
// row are taken as the problem's average (counts.kept_pairs / (B * H_out * S_q)); exact for a
// full check, and for a sampled one wherever every row keeps as many keys. At layer scope: the
// core's full check, the core forward of every row and three times the forward projections.
struct GradientCheckCost {
  int64_t dq_rows = 0;    // dQ rows compared
  int64_t kv_groups = 0;  // (b, kv head) groups compared
  int64_t kv_rows = 0;    // dK (and dV) rows compared: kv_groups * S_kv
  double kept_pairs = 0;  // pair visits, each pass counted
  double flops = 0;
};
GradientCheckCost EstimateGradientCheckCost(const Problem& problem, const WorkCounts& counts,
                                            const CheckOptions& options);

// Relative-error tolerance for each of dQ, dK, dV stored in the problem's dtype (see the .cc).
double GradientToleranceFor(const Problem& problem);

// The check of a normalized, valid, core-scope PHASE_BACKWARD problem whose inputs (dO included)
// are `inputs` (at layer scope: X, the weights and dY). report.tensors holds "dq", "dk", "dv"
// in that order (layer scope: "dx", "dw_q", "dw_k", "dw_v", "dw_o", GradientSlotsOf's); the
// top-level fields
// describe them together: rows_checked and rows_total and non_finite_elements summed,
// max_abs_error and relative_error the largest (NaN when any is), tolerance the common one,
// passed only when every tensor passed. INVALID_ARGUMENT when a gradient's shape is wrong.
absl::StatusOr<CorrectnessReport> CheckGradients(const Problem& problem,
                                                 const AttentionInputs& inputs,
                                                 const GradientTensors& gradients,
                                                 const CheckOptions& options);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_GRADIENT_CHECK_H_
