// Turns a request's MeasurementSettings and CheckSettings into complete plans: the server's
// defaults fill unset fields, values over the server's limits are refused (never clamped, so a
// result always measured what was asked), and the completed settings are echoed in results.
#ifndef ATTNBENCH_SERVER_MEASUREMENT_H_
#define ATTNBENCH_SERVER_MEASUREMENT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"
#include "kernels/reference/check.h"
#include "server/options.h"

namespace attnbench::server {

inline constexpr int kDefaultWarmupIterations = 2;
inline constexpr int kDefaultMinIterations = 5;
inline constexpr int kDefaultMaxIterations = 200;
inline constexpr double kDefaultMaxDurationSeconds = 2.0;
inline constexpr int64_t kDefaultMaxSampledRows = 4096;

// MeasurementSettings.backward_timing: what a PHASE_BACKWARD iteration times.
enum class BackwardTiming {
  kUnspecified,   // not asked; CheckRunRequest makes it kBackwardOnly for PHASE_BACKWARD
  kBackwardOnly,  // the backward alone (O and the log-sum-exp computed before timing)
  kTrainingStep,  // the forward then the backward
};

struct MeasurementPlan {
  int warmup_iterations = kDefaultWarmupIterations;
  int min_iterations = kDefaultMinIterations;
  int max_iterations = kDefaultMaxIterations;
  double max_duration_seconds = kDefaultMaxDurationSeconds;
  double target_relative_noise = 0;  // 0: never stop on noise
  bool flush_cache = true;           // CACHE_MODE_COLD
  bool use_cuda_graph = false;
  bool return_samples = false;
  bool deterministic = false;  // the backend must give the same bits over runs (Problem's too)
  // Only PHASE_BACKWARD takes one (CheckRunRequest refuses it elsewhere); echoed as set there.
  BackwardTiming backward_timing = BackwardTiming::kUnspecified;
};

// INVALID_ARGUMENT naming the field ("measurement.max_iterations") and the rule or limit. Whether
// backward_timing fits the spec's phase is CheckRunRequest's to judge (it needs the spec).
absl::StatusOr<MeasurementPlan> ResolveMeasurement(const ::attnbench::v1::MeasurementSettings& in,
                                                   const ServerOptions& options);
// The plan as settings with every field set: what results echo (backward_timing only when set,
// so forward results carry none).
::attnbench::v1::MeasurementSettings MeasurementToProto(const MeasurementPlan& plan);

struct CheckPlan {
  bool enabled = true;
  bool full = false;
  int64_t max_sampled_rows = kDefaultMaxSampledRows;
};

absl::StatusOr<CheckPlan> ResolveCheck(const ::attnbench::v1::CheckSettings& in);

// What the float64 check of a run compares under `check`: its rows drawn with the problem's seed.
CheckOptions CheckOptionsOf(const CheckPlan& check, uint64_t seed);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_MEASUREMENT_H_
