#include "server/harness.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnbench::server {
namespace {

// Welford's running mean and variance: the noise rule is evaluated after every iteration, and
// re-summarizing all samples each time would be quadratic in the iteration count.
class RunningNoise {
 public:
  void Add(double x) {
    ++n_;
    const double delta = x - mean_;
    mean_ += delta / static_cast<double>(n_);
    m2_ += delta * (x - mean_);
  }
  // True when stdev / mean is defined and below target.
  bool Below(double target) const {
    if (n_ < 2 || !(mean_ > 0)) return false;
    const double stdev = std::sqrt(m2_ / static_cast<double>(n_ - 1));
    return stdev / mean_ < target;
  }

 private:
  long long n_ = 0;
  double mean_ = 0;
  double m2_ = 0;
};

absl::StatusOr<double> OneIteration(Workload& workload, const IterationOptions& options,
                                    const InterruptCheck& interrupted) {
  if (absl::Status s = workload.BeforeIteration(options); !s.ok()) return s;
  absl::StatusOr<double> seconds = workload.RunTimed();
  if (!seconds.ok()) {
    // Stopped midway: the interrupt says why (the client left, or the deadline passed).
    if (absl::Status s = interrupted(); !s.ok()) return s;
    return seconds.status();
  }
  if (!std::isfinite(*seconds) || *seconds < 0) {
    return absl::InternalError(
        absl::StrCat("backend reported an invalid iteration time: ", *seconds, " s"));
  }
  return seconds;
}

}  // namespace

absl::StatusOr<std::vector<double>> MeasureWorkload(Workload& workload, const MeasurementPlan& plan,
                                                    const InterruptCheck& interrupted,
                                                    std::vector<LayerSplit>* layer_splits) {
  if (layer_splits != nullptr) layer_splits->clear();
  bool every_split = true;
  const StopCheck stop([&interrupted] { return !interrupted().ok(); });
  const IterationOptions options{plan.flush_cache, plan.use_cuda_graph, &stop};
  for (int i = 0; i < plan.warmup_iterations; ++i) {
    if (absl::Status s = interrupted(); !s.ok()) return s;
    absl::StatusOr<double> t = OneIteration(workload, options, interrupted);
    if (!t.ok()) return t.status();
  }

  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(std::min(plan.max_iterations, 4096)));
  RunningNoise noise;
  const auto start = std::chrono::steady_clock::now();
  const auto budget = std::chrono::duration<double>(plan.max_duration_seconds);
  while (true) {
    if (absl::Status s = interrupted(); !s.ok()) return s;
    absl::StatusOr<double> t = OneIteration(workload, options, interrupted);
    if (!t.ok()) return t.status();
    samples.push_back(*t);
    noise.Add(*t);
    if (layer_splits != nullptr && every_split) {
      const std::optional<LayerSplit> split = workload.LastLayerSplit();
      if (split.has_value()) {
        layer_splits->push_back(*split);
      } else {
        every_split = false;
        layer_splits->clear();
      }
    }
    const int n = static_cast<int>(samples.size());
    if (n < plan.min_iterations) continue;
    if (n >= plan.max_iterations) break;
    if (std::chrono::steady_clock::now() - start >= budget) break;
    if (plan.target_relative_noise > 0 && noise.Below(plan.target_relative_noise)) break;
  }
  return samples;
}

}  // namespace attnbench::server
