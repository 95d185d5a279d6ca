// The measurement loop: warm-up iterations, then timed iterations until the plan's stopping rule
// holds, with the untimed BeforeIteration (cache flush) between them and a check for cancellation
// or an expired deadline before every iteration and, where the backend polls it
// (IterationOptions::stop), within one, so an abandoned request frees its device soon.
#ifndef ATTNBENCH_SERVER_HARNESS_H_
#define ATTNBENCH_SERVER_HARNESS_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "server/measurement.h"

namespace attnbench::server {

// OK to go on; CANCELLED or DEADLINE_EXCEEDED (returned as is) to stop.
using InterruptCheck = std::function<absl::Status()>;

// Runs plan.warmup_iterations untimed-for-the-result iterations, then timed ones until
// min_iterations are done and one of: max_duration_seconds of measuring elapsed, max_iterations
// reached, or (target_relative_noise > 0) stdev / mean of the samples below the target.
// Returns each timed iteration's duration in seconds, as the workload measured it. With
// `layer_splits`, also each timed iteration's Workload::LastLayerSplit, or none at all when any
// iteration had none.
absl::StatusOr<std::vector<double>> MeasureWorkload(
    Workload& workload, const MeasurementPlan& plan, const InterruptCheck& interrupted,
    std::vector<LayerSplit>* layer_splits = nullptr);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_HARNESS_H_
