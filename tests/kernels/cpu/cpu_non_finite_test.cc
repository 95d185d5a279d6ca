// cpu_reference against the non-finite contract of tests/kernels/non_finite_backend.h (Prepare
// refuses NaN and +-inf client tensors and an overflowing input_scale; a non-finite output
// element outside the sampled rows fails the check), in float32, float16 and bfloat16. Plus the
// case the second line of defence exists for: finite float32 inputs whose scores overflow inside
// the kernel give a non-finite output row, which the run reports and the check fails even when
// its sample leaves that row out.
#include <cmath>
#include <cstdint>
#include <memory>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/check.h"
#include "tests/kernels/non_finite_backend.h"
#include "tests/kernels/non_finite_util.h"

namespace attnbench {
namespace {

using testing::FlatIndex;
using testing::SetElement;
using testing::WithClientInputs;

// B = 2, S_q = 24, S_kv = 40, D = 16, GQA 4/2.
Problem Small(DType dtype) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 24;
  p.seq_len_kv = 40;
  p.head_dim_qk = 16;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.dtype = dtype;
  p.seed = 23;
  return p;
}

constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

TEST(CpuNonFiniteTest, PrepareRefusesNonFiniteClientTensors) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  for (DType d : kDTypes) testing::ExpectPrepareRefusesNonFiniteInputs(*backend, Small(d));
}

TEST(CpuNonFiniteTest, PrepareRefusesAnInputScaleThatOverflows) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  for (DType d : kDTypes) testing::ExpectPrepareRefusesOverflowingInputScale(*backend, Small(d));
}

TEST(CpuNonFiniteTest, NonFiniteOutputFailsTheCheckOutsideTheSampledRows) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  for (DType d : kDTypes) testing::ExpectNonFiniteOutputFailsTheCheck(*backend, Small(d));
}

TEST(CpuNonFiniteTest, ScoresOverflowingInTheKernelFailTheCheck) {
  // One query row (b = 1, i = 7, query head 3) of finite float32 values near FLT_MAX: its scores
  // overflow float32 in the kernel, while the float64 oracle's stay finite.
  Problem p = WithClientInputs(Small(DType::kFloat32));
  for (int d = 0; d < 16; ++d) SetElement(*p.query, FlatIndex(p.query->shape, 1, 7, 3, d), 3e38f);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->BeforeIteration(IterationOptions{}).ok());
  ASSERT_TRUE((*w)->RunTimed().ok());
  const absl::StatusOr<FloatTensor> out = (*w)->Output();
  ASSERT_TRUE(out.ok());
  // Every non-finite element is in that row of output head 3: O[1, 7, 3, :].
  const int64_t row = ((1 * 24 + 7) * 4 + 3) * 16;
  int64_t in_row = 0;
  for (int d = 0; d < 16; ++d) in_row += !std::isfinite(out->values[row + d]);
  const int64_t count = SummarizeTensor(*out).non_finite_elements;
  EXPECT_GT(in_row, 0);
  EXPECT_EQ(count, in_row);

  // A sample of rows that leaves (b = 1, h = 3, i = 7), row (1 * 4 + 3) * 24 + 7 = 175 of 192,
  // out still fails; so does the full check.
  CheckOptions sampled;
  sampled.max_rows = 4;
  bool found = false;
  for (sampled.seed = 0; sampled.seed < 50 && !found; ++sampled.seed) {
    FloatTensor probe = *out;
    for (int d = 0; d < 16; ++d) probe.values[row + d] = 1e6f;  // finite nonsense
    const absl::StatusOr<CorrectnessReport> r = CheckOutput(p, (*w)->Inputs(), probe, sampled);
    ASSERT_TRUE(r.ok());
    if (!r->passed) continue;  // the row is in this sample
    found = true;
    const absl::StatusOr<CorrectnessReport> real = CheckOutput(p, (*w)->Inputs(), *out, sampled);
    ASSERT_TRUE(real.ok());
    EXPECT_LE(real->relative_error, real->tolerance) << "the compared rows are fine";
    EXPECT_EQ(real->non_finite_elements, count);
    EXPECT_FALSE(real->passed);
  }
  EXPECT_TRUE(found) << "no seed in 50 left the row out of a 4-row sample";
  CheckOptions full;
  full.full = true;
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(p, (*w)->Inputs(), *out, full);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->non_finite_elements, count);
  EXPECT_FALSE(r->passed);
}

}  // namespace
}  // namespace attnbench
