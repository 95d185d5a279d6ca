// The per-request compute limit (issue #4, runaway work): a request small enough for
// --max_request_bytes may still ask the CPU for ~1e12 score entries (huge S, tiny D) and hold a
// worker for hours. Each run's work is counted from kernels/spec/counting.h before it queues and
// refused, RESOURCE_EXHAUSTED, over --max_request_flops_cpu (CPU backends, and the float64 check
// of any run, which runs on the host) or --max_request_flops_gpu (any other device).
#ifndef ATTNBENCH_SERVER_WORK_LIMIT_H_
#define ATTNBENCH_SERVER_WORK_LIMIT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/shapes.h"
#include "server/measurement.h"
#include "server/options.h"

namespace attnbench::server {

// What a kept (i, j) pair costs beyond the 2 (D_qk + D_v) FLOPs counted for it (its exponential,
// running maximum and sum), in FLOPs: on the CPU backend a pair costs ~9 ns and a FLOP ~0.1 ns, so
// at D = 1 the FLOP count alone would be some 20 times low.
inline constexpr double kFlopsPerKeptPair = 64;
// The float64 oracle of the check is scalar code, ~4 times slower per FLOP than the backend.
inline constexpr double kCheckFlopFactor = 4;

struct RequestWork {
  // Attention and projection FLOPs plus kFlopsPerKeptPair per kept pair, for one iteration.
  double per_iteration = 0;
  // Warm-up iterations, measurement.min_iterations, and (when max_iterations allows more) the one
  // that may start just before measurement.max_duration_seconds runs out; more than that only
  // while the duration budget lasts, which --max_duration_seconds bounds.
  int iterations = 0;
  // The float64 check of the sampled (or all) rows, in the same FLOPs times kCheckFlopFactor.
  double check = 0;
  // Device work run once outside the timed iterations (the forward a backward-only run needs).
  double device_once = 0;

  double device() const { return per_iteration * iterations + device_once; }
};

// The forward phases (prefill, decode; EstimateBackwardRequestWork for PHASE_BACKWARD).
// rows_total: output rows of the problem (ProblemShapes::rows_total), of which the check compares
// all or check.max_sampled_rows. check_references: the oracles each compared row runs (2 for a
// decode from a quantized cache or FP8 on drawn inputs: the unquantized and the stored inputs'
// references, SplitsQuantizationError).
RequestWork EstimateRequestWork(const WorkCounts& counts, const MeasurementPlan& measurement,
                                const CheckPlan& check, int64_t rows_total,
                                int check_references = 1);

// PHASE_BACKWARD (§7): one iteration's work relative to the forward's. The backward alone is five
// matmuls against the forward's two; a training step runs the forward as well. Applied to the
// forward's FLOPs and to its per-pair cost alike: the backward recomputes P from the log-sum-exp
// and forms dP and dS pair by pair.
inline constexpr double kBackwardOnlyFactor = 2.5;
inline constexpr double kTrainingStepFactor = 3.5;
double BackwardIterationFactor(bool training_step);

// EstimateRequestWork for PHASE_BACKWARD. per_iteration is BackwardIterationFactor(training_step)
// times the forward's attention work, 2 * kept_pairs * (D_qk + D_v) + kFlopsPerKeptPair *
// kept_pairs, taken from counts.kept_pairs and the shapes rather than from counts.flops (whose
// backward factor is the counting's business), plus counts.projection_flops at layer scope (the
// projections' forward and backward products); iterations are counted as for the forward; the
// backward alone also runs one untimed forward first (device_once; at layer scope with its four
// projections). check is kCheckFlopFactor
// times what the float64 gradient check evaluates, by the oracle's own cost model
// (EstimateGradientCheckCost in kernels/reference/gradient_check.h: the dQ rows it compares and
// every row of the (batch, kv head) groups whose dK and dV it compares, each group at least
// once; at layer scope everything whole, with the projections): its FLOPs plus kFlopsPerKeptPair
// per pair visit.
RequestWork EstimateBackwardRequestWork(const Problem& problem, const WorkCounts& counts,
                                        const ProblemShapes& shapes,
                                        const MeasurementPlan& measurement, const CheckPlan& check);

// OK within the limits (a limit of 0 is none); otherwise RESOURCE_EXHAUSTED naming the flag, the
// run's count and the limit. device_kind is DeviceDescription::kind of the backend's devices.
absl::Status CheckWorkLimit(const RequestWork& work, const std::string& backend,
                            const std::string& device_kind, const ServerOptions& options);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_WORK_LIMIT_H_
