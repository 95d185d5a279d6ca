// cpu_reference's PHASE_BACKWARD workload: the forward (keeping the log-sum-exp and O before
// rounding) and the backward kernel (cpu_backward.h) over one thread pool. What an iteration times
// follows Problem::training_step:
//   backward only   the forward runs once, untimed, in the first BeforeIteration (cancellable
//                   through its StopCheck); each RunTimed then rotates Q and K (RoPE) and scales
//                   Q, and runs the backward: D, the key pass, the query pass.
//   training step   each RunTimed runs the forward and then the backward.
// Output() returns O rounded to the dtype, Gradients() dQ, dK, dV.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_WORKLOAD_H_
#define ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_WORKLOAD_H_

#include <cstdint>
#include <memory>

#include "kernels/backend.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

// problem normalized, valid, core-scope PHASE_BACKWARD; inputs from GenerateInputs (dO included).
// `exprs`: the problem's compiled expressions (may be null without any);
// `expression_compile_seconds`: what Prepare spent compiling them, reported back.
std::unique_ptr<Workload> MakeCpuBackwardWorkload(Problem problem, ProblemShapes shapes,
                                                  AttentionInputs inputs, int num_threads,
                                                  std::shared_ptr<const ProblemExpressions> exprs,
                                                  double expression_compile_seconds);

// Host bytes the workload holds: the inputs (dO included) and their prepared copies, O, the
// log-sum-exp, D, dQ, dK, dV, the copies Output() and Gradients() hand out, both kernels' scratch
// for num_threads threads, and its copy of the problem (client tensors, block list).
uint64_t CpuBackwardWorkloadBytes(const Problem& problem, const ProblemShapes& shapes,
                                  int num_threads);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_WORKLOAD_H_
