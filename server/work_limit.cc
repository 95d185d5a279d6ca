#include "server/work_limit.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/reference/gradient_check.h"

namespace attnbench::server {
namespace {

std::string Flops(double x) { return absl::StrFormat("%.3g", x); }

// Warm-up, the minimum timed (at least one), and the one that may overrun the duration budget.
int CountedIterations(const MeasurementPlan& measurement) {
  const int timed = std::max(1, measurement.min_iterations);
  return measurement.warmup_iterations + timed + (measurement.max_iterations > timed ? 1 : 0);
}

}  // namespace

double BackwardIterationFactor(bool training_step) {
  return training_step ? kTrainingStepFactor : kBackwardOnlyFactor;
}

RequestWork EstimateBackwardRequestWork(const Problem& problem, const WorkCounts& counts,
                                        const ProblemShapes& shapes,
                                        const MeasurementPlan& measurement,
                                        const CheckPlan& check) {
  RequestWork work;
  const double pairs = static_cast<double>(counts.kept_pairs);
  const double forward =
      2.0 * pairs * static_cast<double>(shapes.dim_qk + shapes.dim_v) + kFlopsPerKeptPair * pairs;
  // At layer scope the projections add their own count (§7: 2x the forward's four products for
  // the backward, 3x for a training step), and the untimed forward its four products.
  work.per_iteration =
      BackwardIterationFactor(problem.training_step) * forward + counts.projection_flops;
  work.iterations = CountedIterations(measurement);
  if (!problem.training_step) work.device_once = forward + LayerProjectionFlops(shapes);
  if (check.enabled) {
    CheckOptions options;
    options.full = check.full;
    options.max_rows = check.max_sampled_rows;
    const GradientCheckCost cost = EstimateGradientCheckCost(problem, counts, options);
    work.check = kCheckFlopFactor * (cost.flops + kFlopsPerKeptPair * cost.kept_pairs);
  }
  return work;
}

RequestWork EstimateRequestWork(const WorkCounts& counts, const MeasurementPlan& measurement,
                                const CheckPlan& check, int64_t rows_total, int check_references) {
  RequestWork work;
  const double pairs = static_cast<double>(counts.exponentials);
  const double attention = counts.flops + kFlopsPerKeptPair * pairs;
  work.per_iteration = attention + counts.projection_flops;
  work.iterations = CountedIterations(measurement);
  if (check.enabled && rows_total > 0) {
    const double checked =
        check.full
            ? 1.0
            : std::min(1.0, static_cast<double>(std::max<int64_t>(1, check.max_sampled_rows)) /
                                static_cast<double>(rows_total));
    // At layer scope the oracle projects every key and value of a sampled row's sequence, so
    // projections count in full.
    work.check =
        kCheckFlopFactor * check_references * (checked * attention + counts.projection_flops);
  }
  return work;
}

absl::Status CheckWorkLimit(const RequestWork& work, const std::string& backend,
                            const std::string& device_kind, const ServerOptions& options) {
  const bool cpu = device_kind == "cpu";
  const double host_limit = options.max_request_flops_cpu;
  // On a CPU backend the iterations and the check share the host.
  const double device = work.device() + (cpu ? work.check : 0);
  const double device_limit = cpu ? options.max_request_flops_cpu : options.max_request_flops_gpu;
  if (device_limit > 0 && device > device_limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "spec: this run asks backend ", backend, " for ", Flops(device), " FLOPs (",
        work.iterations, " iterations of ", Flops(work.per_iteration),
        cpu ? absl::StrCat(" plus ", Flops(work.check), " for the check") : "",
        "), over --max_request_flops_", cpu ? "cpu" : "gpu", "=", Flops(device_limit),
        "; ask fewer iterations, a smaller spec", cpu ? ", a sampled check or a GPU backend" : ""));
  }
  if (!cpu && host_limit > 0 && work.check > host_limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("check: the float64 check of this run needs ", Flops(work.check),
                     " FLOPs on the host, over --max_request_flops_cpu=", Flops(host_limit),
                     "; use check.mode=CHECK_MODE_OFF or a smaller check.max_sampled_rows"));
  }
  return absl::OkStatus();
}

}  // namespace attnbench::server
