// Shared helpers of the kernels tests: a small valid problem to vary, and an element-by-element
// comparison of a stored output with a float64 expectation at the dtype's resolution.
#ifndef ATTNBENCH_TESTS_KERNELS_TEST_UTIL_H_
#define ATTNBENCH_TESTS_KERNELS_TEST_UTIL_H_

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/problem.h"

namespace attnbench::testing {

// B=2, S_q=S_kv=16, D=8, MHA with 4 heads, float32, prefill core; not normalized.
inline Problem SmallProblem() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 16;
  p.seq_len_kv = 16;
  p.head_dim_qk = 8;
  p.layout.kind = LayoutKind::kMha;
  p.layout.num_heads = 4;
  p.dtype = DType::kFloat32;
  p.seed = 7;
  return p;
}

// Relative size of one unit in the last place of dtype, and its smallest subnormal step.
inline double UlpRelative(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return std::ldexp(1.0, -10);
    case DType::kBFloat16:
      return std::ldexp(1.0, -7);
    case DType::kFloat8E4M3:
      return std::ldexp(1.0, -3);
    default:
      return 0;
  }
}
inline double SubnormalStep(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return std::ldexp(1.0, -24);
    case DType::kBFloat16:
      return std::ldexp(1.0, -133);
    case DType::kFloat8E4M3:
      return std::ldexp(1.0, -9);
    default:
      return 0;
  }
}

// Every element within one ulp of the dtype (rounding may fall either side of a tie when float32
// and float64 differ in the last bits) plus `noise` times the reference's RMS for float32 math.
inline void ExpectAllClose(const std::vector<float>& out, const std::vector<double>& ref,
                           DType dtype, const std::string& context, double noise = 2e-5) {
  ASSERT_EQ(out.size(), ref.size()) << context;
  double sum2 = 0;
  for (double r : ref) sum2 += r * r;
  const double rms = ref.empty() ? 0 : std::sqrt(sum2 / ref.size());
  int failures = 0;
  std::string first;
  for (size_t k = 0; k < out.size(); ++k) {
    const double bound =
        UlpRelative(dtype) * std::fabs(ref[k]) + SubnormalStep(dtype) + noise * rms + 1e-30;
    const double diff = std::fabs(static_cast<double>(out[k]) - ref[k]);
    if (!(diff <= bound)) {
      if (failures++ == 0) {
        first = "element " + std::to_string(k) + ": got " + std::to_string(out[k]) + ", expected " +
                std::to_string(ref[k]) + " (bound " + std::to_string(bound) + ")";
      }
    }
  }
  EXPECT_EQ(failures, 0) << context << ": " << failures << " of " << out.size()
                         << " elements off; first " << first;
}

// ||out - ref|| / ||ref||.
inline double RelativeError(const std::vector<float>& out, const std::vector<double>& ref) {
  double d2 = 0, r2 = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    d2 += (out[k] - ref[k]) * (out[k] - ref[k]);
    r2 += ref[k] * ref[k];
  }
  return std::sqrt(d2 / r2);
}

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_TEST_UTIL_H_
