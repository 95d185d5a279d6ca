// The non-finite contract every backend meets, written once for the CPU and CUDA tests: Prepare
// refuses spoiled client tensors and an overflowing input_scale with the spec layer's
// INVALID_ARGUMENT before any work, and a non-finite element in the backend's real output, in a
// row the sampled check does not compare, is counted by SummarizeTensor and CheckOutput and fails
// the check.
#ifndef ATTNBENCH_TESTS_KERNELS_NON_FINITE_BACKEND_H_
#define ATTNBENCH_TESTS_KERNELS_NON_FINITE_BACKEND_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/reference/check.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/tensors.h"
#include "tests/kernels/non_finite_util.h"

namespace attnbench::testing {

// Q, K and V each spoiled at their last batch, position and head (d = 1) with NaN, +inf and
// -inf: Prepare names the element; the clean client tensors prepare.
inline void ExpectPrepareRefusesNonFiniteInputs(Backend& backend, const Problem& raw) {
  const std::string context = absl::StrCat(backend.Name(), " ", DTypeName(raw.dtype));
  const Problem clean = WithClientInputs(raw);
  {
    absl::StatusOr<std::unique_ptr<Workload>> w = backend.Prepare(clean, 0);
    ASSERT_TRUE(w.ok()) << context << ": " << w.status();
  }
  for (const char* name : {"query", "key", "value"}) {
    for (const auto& [kind, value] : NonFiniteValues()) {
      Problem p = clean;
      HostTensor& t = ClientTensor(p, name);
      const int64_t b = t.shape[0] - 1, s = t.shape[1] - 1, h = t.shape[2] - 1, d = 1;
      const int64_t index = FlatIndex(t.shape, b, s, h, d);
      SetElement(t, index, value);
      const absl::Status status = backend.Prepare(p, 0).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << context << ": " << status;
      EXPECT_EQ(status.message(), RefusalOf(name, index, b, s, h, d, kind)) << context;
    }
  }
}

// Generated inputs: Prepare refuses an input_scale just past the dtype's limit and prepares one
// just within it.
inline void ExpectPrepareRefusesOverflowingInputScale(Backend& backend, const Problem& raw) {
  const std::string context = absl::StrCat(backend.Name(), " ", DTypeName(raw.dtype));
  const DType bound = raw.dtype == DType::kFloat8E4M3 ? DType::kFloat32 : raw.dtype;
  const double limit = LargestFiniteValue(bound) / LargestAbsStandardNormal();
  Problem p = NormalizeProblem(raw);
  p.input_scale = limit * (1 - 1e-9);
  {
    absl::StatusOr<std::unique_ptr<Workload>> w = backend.Prepare(p, 0);
    ASSERT_TRUE(w.ok()) << context << ": " << w.status();
    EXPECT_EQ(CountNonFinite((*w)->Inputs().query), 0) << context;
  }
  p.input_scale = limit * (1 + 1e-9);
  const absl::Status status = backend.Prepare(p, 0).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << context << ": " << status;
  EXPECT_EQ(status.message().find("spec.input_scale ("), 0u) << context << ": " << status;
}

// Runs raw (generated inputs) once, then spoils one element of a row the sampled check leaves
// out (found by spoiling rows with finite nonsense until one still passes).
inline void ExpectNonFiniteOutputFailsTheCheck(Backend& backend, const Problem& raw) {
  const std::string context = absl::StrCat(backend.Name(), " ", DTypeName(raw.dtype));
  const Problem p = NormalizeProblem(raw);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend.Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << context << ": " << w.status();
  ASSERT_TRUE((*w)->BeforeIteration(IterationOptions{}).ok()) << context;
  ASSERT_TRUE((*w)->RunTimed().ok()) << context;
  const absl::StatusOr<FloatTensor> output = (*w)->Output();
  ASSERT_TRUE(output.ok()) << context << ": " << output.status();
  const AttentionInputs& inputs = (*w)->Inputs();
  EXPECT_EQ(SummarizeTensor(*output).non_finite_elements, 0) << context;

  CheckOptions sampled;
  sampled.max_rows = 8;
  sampled.seed = 5;
  const absl::StatusOr<CorrectnessReport> clean = CheckOutput(p, inputs, *output, sampled);
  ASSERT_TRUE(clean.ok()) << context << ": " << clean.status();
  ASSERT_TRUE(clean->passed) << context << ": relative error " << clean->relative_error;
  ASSERT_EQ(clean->non_finite_elements, 0) << context;
  ASSERT_LT(clean->rows_checked, clean->rows_total) << context << ": nothing is left out";

  const int64_t width = output->shape.back();  // one output row (b, i, h) per `width` values
  int64_t unsampled = -1;
  for (int64_t at = static_cast<int64_t>(output->values.size()) - width; at >= 0; at -= width) {
    FloatTensor probe = *output;
    for (int64_t d = 0; d < width; ++d) probe.values[at + d] += 100.0f;
    const absl::StatusOr<CorrectnessReport> r = CheckOutput(p, inputs, probe, sampled);
    if (r.ok() && r->passed) {
      unsampled = at;
      break;
    }
  }
  ASSERT_GE(unsampled, 0) << context;
  for (const auto& [kind, value] : NonFiniteValues()) {
    FloatTensor spoiled = *output;
    spoiled.values[unsampled + width / 2] = value;
    EXPECT_EQ(SummarizeTensor(spoiled).non_finite_elements, 1) << context << " " << kind;
    const absl::StatusOr<CorrectnessReport> r = CheckOutput(p, inputs, spoiled, sampled);
    ASSERT_TRUE(r.ok()) << context << ": " << r.status();
    EXPECT_TRUE(std::isfinite(r->relative_error)) << context << " " << kind;
    EXPECT_EQ(r->non_finite_elements, 1) << context << " " << kind;
    EXPECT_FALSE(r->passed) << context << " " << kind;
  }
}

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_NON_FINITE_BACKEND_H_
