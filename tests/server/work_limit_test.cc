// The per-request compute limit's arithmetic: which iterations count, what the check adds, and
// which flag refuses what, with the numbers in the message.
#include "server/work_limit.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using ::testing::HasSubstr;

WorkCounts Counts(double flops, uint64_t pairs, double projection_flops = 0) {
  WorkCounts c;
  c.flops = flops;
  c.exponentials = pairs;
  c.kept_pairs = pairs;
  c.projection_flops = projection_flops;
  return c;
}

MeasurementPlan Plan(int warmup, int min_iterations, int max_iterations) {
  MeasurementPlan p;
  p.warmup_iterations = warmup;
  p.min_iterations = min_iterations;
  p.max_iterations = max_iterations;
  return p;
}

CheckPlan Check(bool enabled, bool full = false, int64_t rows = 4096) {
  CheckPlan c;
  c.enabled = enabled;
  c.full = full;
  c.max_sampled_rows = rows;
  return c;
}

TEST(WorkLimitTest, CountsWarmupMinimumAndTheIterationThatMayOverrunTheBudget) {
  const WorkCounts counts = Counts(1e9, 1000000);
  const RequestWork w = EstimateRequestWork(counts, Plan(2, 5, 200), Check(false), 100);
  EXPECT_DOUBLE_EQ(w.per_iteration, 1e9 + kFlopsPerKeptPair * 1e6);
  EXPECT_EQ(w.iterations, 2 + 5 + 1);
  EXPECT_DOUBLE_EQ(w.device(), 8 * (1e9 + kFlopsPerKeptPair * 1e6));
  EXPECT_EQ(w.check, 0);
  // max_iterations == min_iterations: none runs beyond them.
  EXPECT_EQ(EstimateRequestWork(counts, Plan(0, 3, 3), Check(false), 100).iterations, 3);
  // The loop always times one iteration.
  EXPECT_EQ(EstimateRequestWork(counts, Plan(1, 0, 1), Check(false), 100).iterations, 2);
}

TEST(WorkLimitTest, TheCheckCountsItsShareOfRowsAndEveryProjection) {
  const WorkCounts counts = Counts(1e9, 1000000, 3e9);
  const double attention = 1e9 + kFlopsPerKeptPair * 1e6;
  // 4096 of 16384 rows sampled.
  EXPECT_DOUBLE_EQ(EstimateRequestWork(counts, Plan(0, 1, 1), Check(true), 16384).check,
                   kCheckFlopFactor * (0.25 * attention + 3e9));
  // Fewer rows than the sample: all of them.
  EXPECT_DOUBLE_EQ(EstimateRequestWork(counts, Plan(0, 1, 1), Check(true), 100).check,
                   kCheckFlopFactor * (attention + 3e9));
  EXPECT_DOUBLE_EQ(EstimateRequestWork(counts, Plan(0, 1, 1), Check(true, true), 1 << 20).check,
                   kCheckFlopFactor * (attention + 3e9));
}

TEST(WorkLimitTest, CpuRunsAreRefusedOverTheCpuLimitWithTheirNumbers) {
  RequestWork w;
  w.per_iteration = 1e12;
  w.iterations = 8;
  w.check = 2e11;
  ServerOptions options;
  options.max_request_flops_cpu = 5e12;
  const absl::Status s = CheckWorkLimit(w, "cpu_reference", "cpu", options);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("--max_request_flops_cpu=5e+12"));
  EXPECT_THAT(s.message(), HasSubstr("8.2e+12 FLOPs"));
  EXPECT_THAT(s.message(), HasSubstr("8 iterations of 1e+12"));
  EXPECT_THAT(s.message(), HasSubstr("cpu_reference"));

  // At the limit exactly: allowed.
  options.max_request_flops_cpu = 8.2e12;
  EXPECT_TRUE(CheckWorkLimit(w, "cpu_reference", "cpu", options).ok());
  // 0: no limit.
  options.max_request_flops_cpu = 0;
  EXPECT_TRUE(CheckWorkLimit(w, "cpu_reference", "cpu", options).ok());
}

TEST(WorkLimitTest, GpuRunsAnswerToTheGpuLimitAndTheirCheckToTheCpuLimit) {
  RequestWork w;
  w.per_iteration = 1e15;
  w.iterations = 10;
  w.check = 1e12;
  ServerOptions options;
  options.max_request_flops_cpu = 5e12;
  options.max_request_flops_gpu = 1e18;
  EXPECT_TRUE(CheckWorkLimit(w, "cuda_flash", "cuda", options).ok());

  options.max_request_flops_gpu = 5e15;
  absl::Status s = CheckWorkLimit(w, "cuda_flash", "cuda", options);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("--max_request_flops_gpu=5e+15"));
  EXPECT_THAT(s.message(), HasSubstr("1e+16 FLOPs"));

  options.max_request_flops_gpu = 1e18;
  w.check = 6e12;
  s = CheckWorkLimit(w, "cuda_flash", "cuda", options);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("check"));
  EXPECT_THAT(s.message(), HasSubstr("6e+12 FLOPs"));
  EXPECT_THAT(s.message(), HasSubstr("--max_request_flops_cpu=5e+12"));
}

}  // namespace
}  // namespace attnbench::server
