#include "server/measurement.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

absl::Status OverLimit(absl::string_view field, double value, absl::string_view flag,
                       double limit) {
  return absl::InvalidArgumentError(absl::StrCat("measurement.", field, " = ", value,
                                                 " exceeds the server limit --", flag, "=", limit));
}

absl::Status Invalid(absl::string_view field, double value, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat("measurement.", field, " = ", value, ": ", rule));
}

}  // namespace

absl::StatusOr<MeasurementPlan> ResolveMeasurement(const pb::MeasurementSettings& in,
                                                   const ServerOptions& options) {
  MeasurementPlan plan;
  const int iteration_limit = options.max_iterations;
  if (in.has_warmup_iterations()) {
    const int v = in.warmup_iterations();
    if (v < 0) return Invalid("warmup_iterations", v, "must be >= 0");
    if (v > iteration_limit) {
      return OverLimit("warmup_iterations", v, "max_iterations", iteration_limit);
    }
    plan.warmup_iterations = v;
  }
  if (in.has_min_iterations()) {
    const int v = in.min_iterations();
    if (v < 1) return Invalid("min_iterations", v, "must be >= 1");
    if (v > iteration_limit)
      return OverLimit("min_iterations", v, "max_iterations", iteration_limit);
    plan.min_iterations = v;
  }
  if (in.has_max_iterations()) {
    const int v = in.max_iterations();
    if (v < 1) return Invalid("max_iterations", v, "must be >= 1");
    if (v > iteration_limit)
      return OverLimit("max_iterations", v, "max_iterations", iteration_limit);
    if (in.has_min_iterations() && v < plan.min_iterations) {
      return Invalid("max_iterations", v,
                     absl::StrCat("must be >= min_iterations (", plan.min_iterations, ")"));
    }
    plan.max_iterations = v;
    // A client that only caps iterations below the default minimum means that many.
    plan.min_iterations = std::min(plan.min_iterations, v);
  } else {
    // Defaults bend to explicit client values rather than contradict them.
    plan.max_iterations =
        std::min(std::max(kDefaultMaxIterations, plan.min_iterations), iteration_limit);
    plan.min_iterations = std::min(plan.min_iterations, plan.max_iterations);
  }
  if (in.has_max_duration_seconds()) {
    const double v = in.max_duration_seconds();
    if (!std::isfinite(v) || v <= 0) return Invalid("max_duration_seconds", v, "must be > 0");
    if (v > options.max_duration_seconds) {
      return OverLimit("max_duration_seconds", v, "max_duration_seconds",
                       options.max_duration_seconds);
    }
    plan.max_duration_seconds = v;
  } else {
    plan.max_duration_seconds = std::min(kDefaultMaxDurationSeconds, options.max_duration_seconds);
  }
  if (in.has_target_relative_noise()) {
    const double v = in.target_relative_noise();
    if (!std::isfinite(v) || v < 0) {
      return Invalid("target_relative_noise", v, "must be >= 0 (0 disables the noise rule)");
    }
    plan.target_relative_noise = v;
  }
  switch (in.cache_mode()) {
    case pb::CACHE_MODE_UNSPECIFIED:
    case pb::CACHE_MODE_COLD:
      plan.flush_cache = true;
      break;
    case pb::CACHE_MODE_WARM:
      plan.flush_cache = false;
      break;
    default:
      return Invalid("cache_mode", in.cache_mode(), "unknown enum value");
  }
  switch (in.backward_timing()) {
    case pb::BACKWARD_TIMING_UNSPECIFIED:
      plan.backward_timing = BackwardTiming::kUnspecified;
      break;
    case pb::BACKWARD_TIMING_BACKWARD_ONLY:
      plan.backward_timing = BackwardTiming::kBackwardOnly;
      break;
    case pb::BACKWARD_TIMING_TRAINING_STEP:
      plan.backward_timing = BackwardTiming::kTrainingStep;
      break;
    default:
      return Invalid("backward_timing", in.backward_timing(), "unknown enum value");
  }
  plan.use_cuda_graph = in.use_cuda_graph();
  plan.return_samples = in.return_samples();
  plan.deterministic = in.deterministic();
  return plan;
}

pb::MeasurementSettings MeasurementToProto(const MeasurementPlan& plan) {
  pb::MeasurementSettings out;
  out.set_warmup_iterations(plan.warmup_iterations);
  out.set_min_iterations(plan.min_iterations);
  out.set_max_iterations(plan.max_iterations);
  out.set_max_duration_seconds(plan.max_duration_seconds);
  out.set_target_relative_noise(plan.target_relative_noise);
  out.set_cache_mode(plan.flush_cache ? pb::CACHE_MODE_COLD : pb::CACHE_MODE_WARM);
  out.set_use_cuda_graph(plan.use_cuda_graph);
  out.set_return_samples(plan.return_samples);
  out.set_deterministic(plan.deterministic);
  switch (plan.backward_timing) {
    case BackwardTiming::kBackwardOnly:
      out.set_backward_timing(pb::BACKWARD_TIMING_BACKWARD_ONLY);
      break;
    case BackwardTiming::kTrainingStep:
      out.set_backward_timing(pb::BACKWARD_TIMING_TRAINING_STEP);
      break;
    case BackwardTiming::kUnspecified:
      break;
  }
  return out;
}

absl::StatusOr<CheckPlan> ResolveCheck(const pb::CheckSettings& in) {
  CheckPlan plan;
  switch (in.mode()) {
    case pb::CHECK_MODE_UNSPECIFIED:
    case pb::CHECK_MODE_AUTO:
      break;
    case pb::CHECK_MODE_OFF:
      plan.enabled = false;
      break;
    case pb::CHECK_MODE_FULL:
      plan.full = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("check.mode = ", in.mode(), ": unknown enum value"));
  }
  if (in.has_max_sampled_rows()) {
    if (in.max_sampled_rows() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("check.max_sampled_rows = ", in.max_sampled_rows(), ": must be >= 1"));
    }
    plan.max_sampled_rows = in.max_sampled_rows();
  }
  return plan;
}

CheckOptions CheckOptionsOf(const CheckPlan& check, uint64_t seed) {
  CheckOptions options;
  options.full = check.full;
  options.max_rows = check.max_sampled_rows;
  options.seed = seed;
  return options;
}

}  // namespace attnbench::server
