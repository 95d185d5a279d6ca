// The per-request compute limit's arithmetic: which iterations count, what the check adds, and
// which flag refuses what, with the numbers in the message.
#include "server/work_limit.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/shapes.h"
#include "server/kv_compression_run.h"

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

// B = 2, S_q = S_kv = 64, MHA 4 heads of D = 16, causal, backward.
Problem BackwardProblem(bool training_step) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = p.seq_len_kv = 64;
  p.head_dim_qk = 16;
  p.layout.kind = LayoutKind::kMha;
  p.layout.num_heads = 4;
  p.mask.kind = MaskKind::kCausal;
  p.dtype = DType::kFloat32;
  p.phase = Phase::kBackward;
  p.training_step = training_step;
  return NormalizeProblem(p);
}

TEST(WorkLimitTest, BackwardCountsTwoAndAHalfForwardsATrainingStepThreeAndAHalf) {
  EXPECT_DOUBLE_EQ(BackwardIterationFactor(false), 2.5);
  EXPECT_DOUBLE_EQ(BackwardIterationFactor(true), 3.5);
  // counts.flops is the counting's (already scaled for backward): the estimate goes by the kept
  // pairs and the head dims instead, so a changed counting convention cannot scale it twice.
  const Problem alone_p = BackwardProblem(false);
  const WorkCounts counts = Counts(/*flops=*/12345, /*pairs=*/1000);
  const ProblemShapes shapes = *ShapesOf(alone_p);
  const double forward = 2.0 * 1000 * (16 + 16) + kFlopsPerKeptPair * 1000;
  const RequestWork alone =
      EstimateBackwardRequestWork(alone_p, counts, shapes, Plan(2, 5, 200), Check(false));
  EXPECT_DOUBLE_EQ(alone.per_iteration, 2.5 * forward);
  EXPECT_EQ(alone.iterations, 2 + 5 + 1);
  EXPECT_EQ(alone.check, 0);
  // The backward alone runs the forward once, untimed, for O and the log-sum-exp.
  EXPECT_DOUBLE_EQ(alone.device_once, forward);
  EXPECT_DOUBLE_EQ(alone.device(), 8 * 2.5 * forward + forward);
  const RequestWork step = EstimateBackwardRequestWork(BackwardProblem(true), counts, shapes,
                                                       Plan(0, 3, 3), Check(false));
  EXPECT_DOUBLE_EQ(step.per_iteration, 3.5 * forward);
  EXPECT_EQ(step.iterations, 3);
  EXPECT_EQ(step.device_once, 0);
  EXPECT_DOUBLE_EQ(step.device(), 3 * 3.5 * forward);
}

TEST(WorkLimitTest, TheBackwardCheckCountsWhatTheOracleEvaluates) {
  const Problem p = BackwardProblem(false);
  const WorkCounts counts = *CountWork(p);
  const ProblemShapes shapes = *ShapesOf(p);
  auto check_work = [&](const CheckPlan& plan) {
    return EstimateBackwardRequestWork(p, counts, shapes, Plan(0, 1, 1), plan).check;
  };
  CheckOptions full;
  full.full = true;
  const GradientCheckCost cost = EstimateGradientCheckCost(p, counts, full);
  ASSERT_GT(cost.flops, 0);
  EXPECT_DOUBLE_EQ(check_work(Check(true, true)),
                   kCheckFlopFactor * (cost.flops + kFlopsPerKeptPair * cost.kept_pairs));
  // The full check evaluates every (batch, kv head) group: more than a forward of the problem.
  EXPECT_GT(cost.kept_pairs, static_cast<double>(counts.kept_pairs));
  // Two sampled rows still compare at least one whole group, and less than the full check.
  const double sampled = check_work(Check(true, false, 2));
  EXPECT_GT(sampled, 0);
  EXPECT_LT(sampled, check_work(Check(true, true)));
  EXPECT_EQ(check_work(Check(false)), 0);
  // The check does not depend on what the iterations time.
  EXPECT_DOUBLE_EQ(EstimateBackwardRequestWork(BackwardProblem(true), counts, shapes, Plan(0, 1, 1),
                                               Check(true, true))
                       .check,
                   check_work(Check(true, true)));
}

// spec.kv_compression: each method's compressed run on the device, once per method, and on the
// host the fits, each method's check and its output error (two float64 oracles).
TEST(WorkLimitTest, KvCompressionAddsTwoCompressedRunsAndTheirHostWork) {
  Problem p;
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 64;
  p.head_dim_qk = 16;
  p.layout.kind = LayoutKind::kMha;
  p.layout.num_heads = 4;
  p.dtype = DType::kFloat32;
  p.kv_compression = {true, 2};
  p = NormalizeProblem(p);
  const WorkCounts counts = Counts(1e6, 10000);
  const double attention = 1e6 + kFlopsPerKeptPair * 1e4;
  for (bool enabled : {false, true}) {
    SCOPED_TRACE(enabled);
    RequestWork w = EstimateRequestWork(counts, Plan(1, 2, 2), Check(enabled), 256);
    const RequestWork plain = w;
    AddKvCompressionWork(counts, Check(enabled), 256, p, &w);
    EXPECT_DOUBLE_EQ(w.device_once, 2 * plain.per_iteration * plain.iterations);
    EXPECT_DOUBLE_EQ(w.device(), 3 * plain.device());
    // All 256 rows fit the sample: each output error is two full oracles.
    EXPECT_DOUBLE_EQ(w.check, plain.check + CompressionHostFlops(p) +
                                  2 * (plain.check + 2 * kCheckFlopFactor * attention));
  }
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
