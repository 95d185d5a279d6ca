// cpu_reference's PHASE_BACKWARD at layer scope (docs/variants.md §5, §6): one attention layer's
// forward and backward over one thread pool, from the backend's own parts: the projections by
// cpu_matmul, the core forward by CpuAttention (keeping the log-sum-exp) and the core backward by
// CpuBackward. In the layer's order:
//
//   forward   Q, K, V = X W_q, X W_k, X W_v (rounded); the core (O kept unrounded for D = <dO,
//             O>, and rounded for what follows); Y = O W_o (rounded)
//   backward  dW_o = O^T dY; dO = dY W_o^T (rounded); the core backward from Q, K, V, dO (dQ, dK,
//             dV rounded); dW_q, dW_k, dW_v = X^T dQ, X^T dK, X^T dV; dX = [dQ dK dV] [W_q W_k
//             W_v]^T, one product over the three gradients side by side
//
// W_o^T and [W_q W_k W_v]^T are laid out once at preparation (the weights are inputs, fixed for
// the run), so every product streams its right operand row by row. What an iteration times
// follows Problem::training_step as in cpu_backward_workload.h: the backward alone (the forward
// once, untimed, in the first BeforeIteration), or a training step (forward, then backward).
// LastLayerSplit divides each iteration between the products (projections and their gradients)
// and the core (forward and backward). Output() returns Y, Gradients() dX and the four weight
// gradients.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_LAYER_BACKWARD_WORKLOAD_H_
#define ATTNBENCH_KERNELS_CPU_CPU_LAYER_BACKWARD_WORKLOAD_H_

#include <cstdint>
#include <memory>

#include "kernels/backend.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

// problem normalized, valid, layer-scope PHASE_BACKWARD; inputs from GenerateInputs (X, the
// weights and dY). `exprs`: the problem's compiled expressions (may be null without any).
std::unique_ptr<Workload> MakeCpuLayerBackwardWorkload(
    Problem problem, ProblemShapes shapes, AttentionInputs inputs, int num_threads,
    std::shared_ptr<const ProblemExpressions> exprs, double expression_compile_seconds);

// Host bytes the workload holds: its inputs, the transposed weights, every intermediate of the
// forward and backward above, the copies Output() and Gradients() hand out, both core kernels'
// scratch for num_threads threads, and its copy of the problem.
uint64_t CpuLayerBackwardWorkloadBytes(const Problem& problem, const ProblemShapes& shapes,
                                       int num_threads);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_LAYER_BACKWARD_WORKLOAD_H_
