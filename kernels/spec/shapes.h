// Tensor shapes a problem implies (§1, §6): Q, K, V, O in BSHD, and at layer scope X, the four
// weights and Y. One place computes them so the generator, validation, backends and the server's
// tensor messages agree.
#ifndef ATTNBENCH_KERNELS_SPEC_SHAPES_H_
#define ATTNBENCH_KERNELS_SPEC_SHAPES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"

namespace attnbench {

using Shape = std::vector<int64_t>;

struct ProblemShapes {
  HeadConfig heads;
  int64_t batch = 0;
  int64_t seq_q = 0;
  int64_t seq_kv = 0;
  int64_t dim_qk = 0;
  int64_t dim_v = 0;
  bool layer = false;
  int64_t d_model = 0;  // layer scope only
  Shape query;          // [B, S_q, H_q, D_qk]
  Shape key;            // [B, S_kv, H_kv, D_qk]
  Shape value;          // [B, S_kv, H_kv, D_v]
  Shape core_output;    // [B, S_q, H_out, D_v]
  // Layer scope only (empty otherwise).
  Shape x;    // [B, S, d_model]
  Shape w_q;  // [d_model, H_q * D_qk]
  Shape w_k;  // [d_model, H_kv * D_qk]
  Shape w_v;  // [d_model, H_kv * D_v]
  Shape w_o;  // [H_out * D_v, d_model]
  // What Workload::Output returns: core_output, or Y [B, S, d_model] at layer scope.
  Shape output;
  // Output rows the correctness check compares: (b, h, i) at core scope, (b, i) at layer scope;
  // each row is the last dimension of `output` (D_v or d_model) wide.
  int64_t rows_total = 0;
  int64_t row_width = 0;
};

// Shapes of a normalized problem whose layout is valid; sizes are not bounds-checked here
// (ValidateProblem does that), so call it on validated problems.
absl::StatusOr<ProblemShapes> ShapesOf(const Problem& problem);

// Product of the dimensions (1 for an empty shape).
int64_t NumElements(const Shape& shape);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_SHAPES_H_
