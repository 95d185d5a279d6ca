#include "server/harness.h"

#include <chrono>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

// A workload whose iteration times are scripted, to drive every stopping rule exactly.
class ScriptedWorkload : public Workload {
 public:
  explicit ScriptedWorkload(std::function<double(int)> time_of, double sleep_seconds = 0)
      : time_of_(std::move(time_of)), sleep_seconds_(sleep_seconds) {}
  absl::Status BeforeIteration(const IterationOptions& options) override {
    ++before_calls;
    flushes += options.flush_cache ? 1 : 0;
    if (fail_before_at >= 0 && before_calls > fail_before_at) {
      return absl::InternalError("flush failed");
    }
    return absl::OkStatus();
  }
  absl::StatusOr<double> RunTimed() override {
    if (sleep_seconds_ > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(sleep_seconds_));
    }
    return time_of_(runs++);
  }
  const AttentionInputs& Inputs() const override { return inputs_; }
  absl::StatusOr<FloatTensor> Output() override { return FloatTensor(); }
  DeviceDescription Device() const override { return DeviceDescription(); }
  std::optional<LayerSplit> LastLayerSplit() const override {
    if (split_of == nullptr) return std::nullopt;
    return split_of(runs - 1);
  }

  // The split each run reports (by run index), or none when null.
  std::function<std::optional<LayerSplit>(int)> split_of;
  int runs = 0;
  int before_calls = 0;
  int flushes = 0;
  int fail_before_at = -1;

 private:
  std::function<double(int)> time_of_;
  double sleep_seconds_;
  AttentionInputs inputs_;
};

absl::Status NeverInterrupted() { return absl::OkStatus(); }

MeasurementPlan Plan(int warmup, int min, int max, double duration = 100, double noise = 0) {
  MeasurementPlan p;
  p.warmup_iterations = warmup;
  p.min_iterations = min;
  p.max_iterations = max;
  p.max_duration_seconds = duration;
  p.target_relative_noise = noise;
  return p;
}

TEST(HarnessTest, CollectsTheLayerSplitOfEveryTimedIteration) {
  ScriptedWorkload w([](int i) { return 1.0 + i; });
  w.split_of = [](int run) { return LayerSplit{0.25 * run, 0.5 * run}; };
  std::vector<LayerSplit> splits;
  const auto samples = MeasureWorkload(w, Plan(2, 3, 3), NeverInterrupted, &splits);
  ASSERT_TRUE(samples.ok());
  ASSERT_EQ(splits.size(), 3u);  // warm-up runs 0 and 1 are not recorded
  EXPECT_DOUBLE_EQ(splits[0].projections_seconds, 0.5);
  EXPECT_DOUBLE_EQ(splits[2].core_seconds, 2.0);
}

TEST(HarnessTest, NoLayerSplitsWhenAnyIterationHasNone) {
  ScriptedWorkload w([](int) { return 1.0; });
  w.split_of = [](int run) -> std::optional<LayerSplit> {
    if (run == 3) return std::nullopt;
    return LayerSplit{1, 2};
  };
  std::vector<LayerSplit> splits = {LayerSplit{}};
  ASSERT_TRUE(MeasureWorkload(w, Plan(0, 5, 5), NeverInterrupted, &splits).ok());
  EXPECT_TRUE(splits.empty());
  ScriptedWorkload core([](int) { return 1.0; });
  splits = {LayerSplit{}};
  ASSERT_TRUE(MeasureWorkload(core, Plan(0, 2, 2), NeverInterrupted, &splits).ok());
  EXPECT_TRUE(splits.empty());
}

TEST(HarnessTest, WarmupUntimedThenStopsAtMaxIterations) {
  ScriptedWorkload w([](int i) { return i % 2 == 0 ? 1.0 : 3.0; });
  const auto samples = MeasureWorkload(w, Plan(3, 2, 7), NeverInterrupted);
  ASSERT_TRUE(samples.ok()) << samples.status();
  EXPECT_EQ(samples->size(), 7u);
  EXPECT_EQ(w.runs, 10);
  EXPECT_EQ(w.before_calls, 10);
  EXPECT_EQ(w.flushes, 10);  // cold by default
  // Samples start after warm-up: run 3 (odd) is the first timed one.
  EXPECT_DOUBLE_EQ((*samples)[0], 3.0);
}

TEST(HarnessTest, WarmCacheDoesNotFlush) {
  ScriptedWorkload w([](int) { return 1.0; });
  MeasurementPlan plan = Plan(1, 2, 2);
  plan.flush_cache = false;
  ASSERT_TRUE(MeasureWorkload(w, plan, NeverInterrupted).ok());
  EXPECT_EQ(w.flushes, 0);
  EXPECT_EQ(w.before_calls, 3);
}

TEST(HarnessTest, NoiseRuleStopsAfterMinimum) {
  // Constant times: stdev 0 < target as soon as there are two samples, but min is 4.
  ScriptedWorkload w([](int) { return 1.0; });
  const auto samples = MeasureWorkload(w, Plan(0, 4, 1000, 100, 0.05), NeverInterrupted);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(samples->size(), 4u);
}

TEST(HarnessTest, NoisySamplesRunToMaximum) {
  // Alternating 1 and 3: stdev / mean ~ 0.5, never under 0.05.
  ScriptedWorkload w([](int i) { return i % 2 == 0 ? 1.0 : 3.0; });
  const auto samples = MeasureWorkload(w, Plan(0, 2, 50, 100, 0.05), NeverInterrupted);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(samples->size(), 50u);
}

TEST(HarnessTest, NoiseRuleOffRunsToMaximum) {
  ScriptedWorkload w([](int) { return 1.0; });
  const auto samples = MeasureWorkload(w, Plan(0, 2, 30), NeverInterrupted);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(samples->size(), 30u);
}

TEST(HarnessTest, DurationStopsOnceMinimumDone) {
  // 10 ms per iteration against a 50 ms budget: about 5 iterations, far from the maximum.
  ScriptedWorkload w([](int) { return 0.01; }, 0.01);
  const auto samples = MeasureWorkload(w, Plan(0, 2, 100000, 0.05), NeverInterrupted);
  ASSERT_TRUE(samples.ok());
  EXPECT_GE(samples->size(), 2u);
  EXPECT_LE(samples->size(), 12u);
  // The minimum wins over the duration.
  ScriptedWorkload slow([](int) { return 0.01; }, 0.01);
  const auto forced = MeasureWorkload(slow, Plan(0, 8, 100000, 0.001), NeverInterrupted);
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(forced->size(), 8u);
}

TEST(HarnessTest, InterruptionStopsBetweenIterations) {
  ScriptedWorkload w([](int) { return 1.0; });
  int checks = 0;
  const InterruptCheck cancel_after_5 = [&]() -> absl::Status {
    return ++checks > 5 ? absl::CancelledError("gone") : absl::OkStatus();
  };
  const auto samples = MeasureWorkload(w, Plan(2, 100, 100), cancel_after_5);
  EXPECT_EQ(samples.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(w.runs, 5);

  ScriptedWorkload d([](int) { return 1.0; });
  const InterruptCheck deadline = [] { return absl::DeadlineExceededError("late"); };
  EXPECT_EQ(MeasureWorkload(d, Plan(2, 1, 1), deadline).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(d.runs, 0);
}

TEST(HarnessTest, BackendErrorsAndBadTimesPropagate) {
  ScriptedWorkload w([](int) { return 1.0; });
  w.fail_before_at = 3;
  EXPECT_EQ(MeasureWorkload(w, Plan(1, 10, 10), NeverInterrupted).status().code(),
            absl::StatusCode::kInternal);
  ScriptedWorkload nan([](int) { return std::nan(""); });
  EXPECT_EQ(MeasureWorkload(nan, Plan(0, 1, 1), NeverInterrupted).status().code(),
            absl::StatusCode::kInternal);
  ScriptedWorkload negative([](int) { return -1.0; });
  EXPECT_EQ(MeasureWorkload(negative, Plan(0, 1, 1), NeverInterrupted).status().code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace attnbench::server
