// The float64 oracle of PHASE_BACKWARD at layer scope (docs/variants.md §5, §6): dX and the four
// weight gradients of one attention layer from X, the weights and dY, straight from the formulas,
// with the layer's stored intermediates rounded to the dtype where the layer stores them:
//
//   Q = X W_q, K = X W_k, V = X W_v        each summed in double, rounded to the dtype
//   O = the core forward (reference64) of Q, K, V, rounded to the dtype
//   dO = dY W_o^T, rounded;  dQ, dK, dV = the core backward (backward64) of Q, K, V and dO, rounded
//   dW_o = O^T dY,  dW_q = X^T dQ,  dW_k = X^T dK,  dW_v = X^T dV
//   dX = dQ W_q^T + dK W_k^T + dV W_v^T
//
// (Q, K, V, O and their gradients as [B S, H D] matrices: BSHD row by row.) The core parts are the
// core oracles' own, run on the core problem the layer contains, so the attention math exists once.
// A weight's gradient sums over every token, so everything is computed whole: the core forward
// and backward of every row, and the products, each O(B S d_model H D).
#ifndef ATTNBENCH_KERNELS_REFERENCE_LAYER_BACKWARD64_H_
#define ATTNBENCH_KERNELS_REFERENCE_LAYER_BACKWARD64_H_

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

// Row-major, the shapes of X and the weights (ProblemShapes::x, w_q, w_k, w_v, w_o).
struct LayerGradients64 {
  std::vector<double> dx;
  std::vector<double> dw_q;
  std::vector<double> dw_k;
  std::vector<double> dw_v;
  std::vector<double> dw_o;
};

// problem: normalized, valid, layer scope, PHASE_BACKWARD; inputs: GenerateInputs' for it (X, the
// weights and dY in grad_output; shapes are checked). Splits the work over `threads` threads; the
// result does not depend on how many.
absl::StatusOr<LayerGradients64> LayerBackward64(const Problem& problem,
                                                 const AttentionInputs& inputs, int threads);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_LAYER_BACKWARD64_H_
