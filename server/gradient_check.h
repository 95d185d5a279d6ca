// The correctness check of a PHASE_BACKWARD run, behind one seam: RunExecutor asks
// BackwardCheckAvailable before a backward run queues and calls CheckBackwardRun after it, and
// nothing else in the server knows how gradients are checked: the float64 oracles of dQ, dK, dV
// and of a layer's dX and weight gradients are kernels/reference's (gradient_check.h).
#ifndef ATTNBENCH_SERVER_GRADIENT_CHECK_H_
#define ATTNBENCH_SERVER_GRADIENT_CHECK_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/reference/check.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench::server {

// OK when this server can compare gradients with the float64 reference; otherwise UNIMPLEMENTED
// naming check.mode and how to run without the check.
absl::Status BackwardCheckAvailable();

// Compares a backward run's gradients with the float64 reference (the contract of
// CorrectnessReport in kernels/reference/check.h): report.tensors holds the problem's gradients
// by their GradientSlotsOf names ("dq", "dk", "dv"; at layer scope "dx", "dw_q", "dw_k", "dw_v",
// "dw_o"; in that order, others may follow; RunExecutor refuses a report without any of them as
// INTERNAL), each against its own reference; the report's own fields are the worst of them, and
// passed is set only when all of them passed. `inputs` are the workload's
// (Workload::Inputs, grad_output included).
absl::StatusOr<CorrectnessReport> CheckBackwardRun(const Problem& problem,
                                                   const AttentionInputs& inputs,
                                                   const GradientTensors& gradients,
                                                   const CheckOptions& options);

using BackwardCheckFn = std::function<absl::StatusOr<CorrectnessReport>(
    const Problem&, const AttentionInputs&, const GradientTensors&, const CheckOptions&)>;

// Tests only: while one is alive, BackwardCheckAvailable is OK and CheckBackwardRun calls `check`
// instead, so the service's handling of a gradient report is testable whatever the oracle. At
// most one at a time.
class ScopedBackwardCheckForTesting {
 public:
  explicit ScopedBackwardCheckForTesting(BackwardCheckFn check);
  ~ScopedBackwardCheckForTesting();
  ScopedBackwardCheckForTesting(const ScopedBackwardCheckForTesting&) = delete;
  ScopedBackwardCheckForTesting& operator=(const ScopedBackwardCheckForTesting&) = delete;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_GRADIENT_CHECK_H_
