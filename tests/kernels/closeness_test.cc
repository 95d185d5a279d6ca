// The per-element output bound the CPU and GPU backend tests share (test_util.h CompareRows and
// its tolerances), proven both ways without a GPU:
//   - it fails what a global relative L2 error lets through: five wildly wrong elements out of
//     the ~60k of the GPU test's base case, one element off by a tenth of its row, a row 5% off,
//     a NaN, anything at all in a row whose every key is hidden;
//   - it passes a tensor-core kernel emulated on the host with the roundings such kernels make
//     (RoPE'd Q and K and the probabilities P rounded to the dtype, float32 scores, exp2 and
//     online softmax over 64-key tiles, the output rounded), on exactly the problems and seeds of
//     the GPU test (kernel_cases.h), with its worst element under half the bound: the margin the
//     lead's device run relies on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "tests/kernels/kernel_cases.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench::testing {
namespace {

// A FlashAttention-2-style forward on the host, in float32, rounding where a tensor-core kernel
// rounds: Q and K rotated in float then stored in the dtype (the mma operands), scores summed in
// float, ALiBi and softcap in float, p = exp2((s - m) log2 e) per 64-key tile against the running
// maximum, P rounded to the dtype for P V while the row sum l adds the unrounded p, the
// accumulator rescaled in float when the maximum moves, O = acc / l rounded to the dtype.
std::vector<float> EmulateTensorCoreKernel(const Problem& p, const AttentionInputs& in,
                                           int tile_keys = 64) {
  const NaiveHeads heads = NaiveHeadMap(p.layout);
  const int64_t B = p.batch_size, Sq = p.seq_len_q, Skv = p.seq_len_kv;
  const int Dqk = p.head_dim_qk, Dv = p.head_dim_v.value_or(Dqk);
  const float scale = static_cast<float>(p.scale.value_or(1.0 / std::sqrt(Dqk)));
  const int rot = p.rope.rotary_dims.value_or(Dqk);
  const double theta = p.rope.theta.value_or(10000.0);
  std::vector<float> slopes(heads.hout, 0.0f);
  if (p.alibi.enabled) {
    if (p.alibi.schedule == AlibiSchedule::kHarmonic) {
      for (int h = 0; h < heads.hout; ++h) {
        slopes[h] = static_cast<float>(p.alibi.harmonic_base_slope.value_or(1.0) / (h + 1));
      }
    } else {
      const std::vector<double> s = NaiveAlibiSlopes(heads.hout);
      for (int h = 0; h < heads.hout; ++h) slopes[h] = static_cast<float>(s[h]);
    }
  }
  // A row as the kernel's shared memory holds it: rotated in float from a float cos/sin table,
  // rounded to the storage type.
  auto load = [&](const float* row, int64_t pos) {
    std::vector<float> x(row, row + Dqk);
    if (p.rope.enabled) {
      for (int m = 0; m < rot / 2; ++m) {
        const double angle = static_cast<double>(pos) * std::pow(theta, -2.0 * m / rot);
        const float c = static_cast<float>(std::cos(angle));
        const float s = static_cast<float>(std::sin(angle));
        x[m] = row[m] * c - row[m + rot / 2] * s;
        x[m + rot / 2] = row[m + rot / 2] * c + row[m] * s;
      }
      for (float& v : x) v = RoundToDType(v, p.dtype);
    }
    return x;
  };
  const float log2e = 1.4426950408889634f;
  std::vector<float> out(B * Sq * heads.hout * Dv, 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    for (int h = 0; h < heads.hout; ++h) {
      const int qh = heads.map[h].first, kh = heads.map[h].second;
      std::vector<std::vector<float>> keys(Skv);
      for (int64_t j = 0; j < Skv; ++j) {
        keys[j] = load(&in.key.values[((b * Skv + j) * heads.hkv + kh) * Dqk], j);
      }
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t ip = i + Skv - Sq;
        const std::vector<float> q =
            load(&in.query.values[((b * Sq + i) * heads.hq + qh) * Dqk], ip);
        float m = -std::numeric_limits<float>::infinity();
        float l = 0;
        std::vector<float> acc(Dv, 0.0f);
        for (int64_t j0 = 0; j0 < Skv; j0 += tile_keys) {
          const int64_t j1 = std::min(Skv, j0 + tile_keys);
          std::vector<float> s(j1 - j0, -std::numeric_limits<float>::infinity());
          float tile_max = -std::numeric_limits<float>::infinity();
          for (int64_t j = j0; j < j1; ++j) {
            if (!NaiveKeeps(p, b, h, i, j)) continue;
            float dot = 0;
            for (int d = 0; d < Dqk; ++d) dot = std::fma(q[d], keys[j][d], dot);
            float score = scale * dot;
            if (p.alibi.enabled) score += slopes[h] * static_cast<float>(j - ip);
            if (p.softcap.enabled) {
              const float cap = static_cast<float>(p.softcap.cap);
              score = cap * std::tanh(score / cap);
            }
            s[j - j0] = score;
            tile_max = std::max(tile_max, score);
          }
          if (tile_max == -std::numeric_limits<float>::infinity()) continue;
          const float m_new = std::max(m, tile_max);
          const float correction = std::exp2((m - m_new) * log2e);  // exp2(-inf) = 0
          l *= correction;
          for (float& a : acc) a *= correction;
          for (int64_t j = j0; j < j1; ++j) {
            if (s[j - j0] == -std::numeric_limits<float>::infinity()) continue;
            const float pj = std::exp2(std::fma(s[j - j0], log2e, -m_new * log2e));
            l += pj;
            const float stored = RoundToDType(pj, p.dtype);
            const float* v = &in.value.values[((b * Skv + j) * heads.hkv + kh) * Dv];
            for (int d = 0; d < Dv; ++d) acc[d] = std::fma(stored, v[d], acc[d]);
          }
          m = m_new;
        }
        float* o = &out[((b * Sq + i) * heads.hout + h) * Dv];
        for (int d = 0; d < Dv; ++d) o[d] = l > 0 ? RoundToDType(acc[d] / l, p.dtype) : 0.0f;
      }
    }
  }
  return out;
}

struct Emulated {
  Problem problem;
  std::vector<int64_t> shape;
  std::vector<double> ref;
  std::vector<float> out;
};

Emulated Emulate(int index, DType dtype) {
  Emulated e;
  e.problem = NormalizeProblem(GpuCaseProblem(index, dtype));
  absl::StatusOr<AttentionInputs> in = GenerateInputs(e.problem);
  EXPECT_TRUE(in.ok()) << in.status();
  if (!in.ok()) return e;
  e.ref = NaiveAttention(e.problem, *in);
  e.out = EmulateTensorCoreKernel(e.problem, *in);
  const NaiveHeads heads = NaiveHeadMap(e.problem.layout);
  e.shape = {e.problem.batch_size, e.problem.seq_len_q, heads.hout,
             e.problem.head_dim_v.value_or(e.problem.head_dim_qk)};
  return e;
}

int CaseIndex(const std::string& name) {
  const std::vector<KernelCase> cases = GpuKernelCases();
  for (size_t k = 0; k < cases.size(); ++k) {
    if (cases[k].name == name) return static_cast<int>(k);
  }
  ADD_FAILURE() << "no GPU case " << name;
  return 0;
}

TEST(CompareRowsTest, AppliesTheFormulaAtTheBoundary) {
  // Row max 1: bound = 0.125 |ref| + 0.0625 (values exact in binary, so the edge is exact).
  const Tolerance tol{0.125, 0.0625, 0};
  const std::vector<double> ref = {1, -0.5, 0.25, 0};
  std::vector<float> out = {1.1875f, -0.375f, 0.15625f, -0.0625f};  // each exactly at its bound
  CloseReport r = CompareRows(out, ref, {1, 4}, tol);
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_DOUBLE_EQ(r.worst_ratio, 1.0);
  out[1] = -0.37f;  // 0.13 off, bound 0.125
  r = CompareRows(out, ref, {1, 4}, tol);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failures, 1);
  EXPECT_EQ(r.worst, 1);
  EXPECT_EQ(r.worst_coords, (std::vector<int64_t>{0, 1}));
  EXPECT_DOUBLE_EQ(r.worst_row_max, 1.0);
  EXPECT_DOUBLE_EQ(r.worst_bound, 0.125);
  // Sizes that disagree with each other or with the shape never pass.
  EXPECT_TRUE(CompareRows(out, ref, {1, 3}, tol).size_mismatch);
  EXPECT_TRUE(CompareRows({1, 2, 3}, ref, {1, 4}, tol).size_mismatch);
  EXPECT_FALSE(CompareRows(out, ref, {}, tol).ok());
}

TEST(CompareRowsTest, TheRowSetsTheScaleNotTheTensor) {
  // Two rows: one of size ~1, one of size ~1e-3. An error of 1e-4 in the small row is 10% of it.
  const Tolerance tol = TensorCoreKernelTolerance(DType::kFloat16);
  const std::vector<double> ref = {1.0, -0.75, 0.5, 0.25, 1e-3, -7.5e-4, 5e-4, 2.5e-4};
  std::vector<float> out(ref.begin(), ref.end());
  EXPECT_TRUE(CompareRows(out, ref, {2, 4}, tol).ok());
  out[5] += 1e-4f;
  const CloseReport r = CompareRows(out, ref, {2, 4}, tol);
  EXPECT_EQ(r.failures, 1) << r.Describe();
  EXPECT_EQ(r.worst_coords, (std::vector<int64_t>{1, 1}));
  // The same absolute error in the large row is far inside its bound.
  out = std::vector<float>(ref.begin(), ref.end());
  out[1] += 1e-4f;
  EXPECT_TRUE(CompareRows(out, ref, {2, 4}, tol).ok());
}

TEST(CompareRowsTest, NonFiniteAndHiddenRowsFail) {
  const Tolerance tol = TensorCoreKernelTolerance(DType::kBFloat16);
  // A row whose every key is hidden outputs zeros: anything else is infinitely far off.
  const std::vector<double> ref = {0.5, 0.25, 0, 0};
  std::vector<float> out = {0.5f, 0.25f, 0.0f, 1e-3f};
  CloseReport r = CompareRows(out, ref, {2, 2}, tol);
  EXPECT_EQ(r.failures, 1);
  EXPECT_EQ(r.worst, 3);
  EXPECT_GT(r.worst_ratio, 1e30);  // the bound is bfloat16's subnormal step, 2^-133
  out[3] = -0.0f;                  // a negative zero is still zero
  EXPECT_TRUE(CompareRows(out, ref, {2, 2}, tol).ok());
  out[0] = std::numeric_limits<float>::quiet_NaN();  // the poison, never overwritten
  r = CompareRows(out, ref, {2, 2}, tol);
  EXPECT_EQ(r.failures, 1);
  EXPECT_EQ(r.not_finite, 1);
  EXPECT_EQ(r.worst, 0);
  out[0] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(CompareRows(out, ref, {2, 2}, tol).not_finite, 1);
}

// The example: the GPU test's base case (bfloat16, 59,136 elements), its output as a
// correct tensor-core kernel computes it, then five elements zeroed. The relative L2 error stays
// under the 1e-2 the GPU test used to accept; the per-element bound fails all five, and the
// gtest expectation fails with their count and the worst one's coordinates.
TEST(CompareRowsTest, FiveWildlyWrongElementsOutOf60kFail) {
  const Emulated e = Emulate(CaseIndex("gqa_none"), DType::kBFloat16);
  ASSERT_EQ(e.out.size(), 59136u);
  const Tolerance tol = TensorCoreKernelTolerance(DType::kBFloat16);
  const CloseReport clean = CompareRows(e.out, e.ref, e.shape, tol);
  ASSERT_TRUE(clean.ok()) << clean.Describe();

  // Five elements no larger than the tensor's RMS (so the L2 norm hardly notices them) and at
  // least a quarter of their row's maximum (so zeroing one is wildly wrong for its row).
  double sum2 = 0;
  for (double r : e.ref) sum2 += r * r;
  const double rms = std::sqrt(sum2 / e.ref.size());
  const int64_t row = e.shape.back();
  std::mt19937 rng(5);
  std::vector<int64_t> planted;
  while (planted.size() < 5) {
    const int64_t k = std::uniform_int_distribution<int64_t>(0, e.ref.size() - 1)(rng);
    double row_max = 0;
    for (int64_t t = k / row * row; t < (k / row + 1) * row; ++t) {
      row_max = std::max(row_max, std::fabs(e.ref[t]));
    }
    if (std::fabs(e.ref[k]) <= rms && std::fabs(e.ref[k]) >= 0.25 * row_max &&
        std::find(planted.begin(), planted.end(), k) == planted.end()) {
      planted.push_back(k);
    }
  }
  std::vector<float> wrong = e.out;
  for (int64_t k : planted) wrong[k] = 0.0f;

  EXPECT_LT(RelativeError(wrong, e.ref), 1e-2) << "the old check would have caught this";
  const CloseReport r = CompareRows(wrong, e.ref, e.shape, tol);
  EXPECT_EQ(r.failures, 5) << r.Describe();
  EXPECT_NE(std::find(planted.begin(), planted.end(), r.worst), planted.end());
  ASSERT_EQ(r.worst_coords.size(), 4u);
  EXPECT_EQ(r.worst_coords[3], r.worst % row);
  EXPECT_GT(r.worst_ratio, 5);
  EXPECT_NONFATAL_FAILURE(ExpectAllClose(wrong, e.ref, e.shape, tol, "planted"),
                          "5 of 59136 elements outside");
}

TEST(CompareRowsTest, SmallerErrorsThanTheBoundsResolutionStillFailInTheirRow) {
  // float16: one element off by a tenth of its row's maximum.
  Emulated e = Emulate(CaseIndex("mha_causal"), DType::kFloat16);
  const Tolerance f16 = TensorCoreKernelTolerance(DType::kFloat16);
  ASSERT_TRUE(CompareRows(e.out, e.ref, e.shape, f16).ok());
  const int64_t row = e.shape.back();
  const int64_t k = 1234;
  double row_max = 0;
  for (int64_t t = k / row * row; t < (k / row + 1) * row; ++t) {
    row_max = std::max(row_max, std::fabs(e.ref[t]));
  }
  std::vector<float> wrong = e.out;
  wrong[k] += static_cast<float>(0.1 * row_max);
  CloseReport r = CompareRows(wrong, e.ref, e.shape, f16);
  EXPECT_EQ(r.failures, 1) << r.Describe();
  EXPECT_EQ(r.worst, k);

  // bfloat16: one whole row 5% too large (a wrong normalizer l for one query).
  e = Emulate(CaseIndex("window"), DType::kBFloat16);
  const Tolerance bf16 = TensorCoreKernelTolerance(DType::kBFloat16);
  ASSERT_TRUE(CompareRows(e.out, e.ref, e.shape, bf16).ok());
  wrong = e.out;
  const int64_t start = 4321 / row * row;
  for (int64_t t = start; t < start + row; ++t) wrong[t] *= 1.05f;
  r = CompareRows(wrong, e.ref, e.shape, bf16);
  EXPECT_GE(r.failures, 1) << r.Describe();
  EXPECT_EQ(r.worst / row, start / row);
}

// Every GPU test case in each dtype, emulated: the worst element must stay under half of
// TensorCoreKernelTolerance, so a real kernel making the same kinds of roundings in another
// order has a 2x margin. A failure here means the bound is too tight for the GPU run.
class EmulatedKernelTest : public ::testing::TestWithParam<DType> {};

TEST_P(EmulatedKernelTest, WorstElementIsUnderHalfTheBound) {
  const DType dtype = GetParam();
  const Tolerance tol = TensorCoreKernelTolerance(dtype);
  const std::vector<KernelCase> cases = GpuKernelCases();
  double worst = 0;
  std::string worst_case;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Emulated e = Emulate(static_cast<int>(k), dtype);
    const CloseReport r = CompareRows(e.out, e.ref, e.shape, tol);
    EXPECT_LT(r.worst_ratio, 0.5) << cases[k].name << ": " << r.Describe();
    if (r.worst_ratio > worst) {
      worst = r.worst_ratio;
      worst_case = cases[k].name + ": " + r.Describe();
    }
  }
  RecordProperty("worst_ratio", std::to_string(worst));
  std::cout << DTypeName(dtype) << ": worst element at " << worst << " of the bound (" << worst_case
            << ")\n";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedKernelTest,
                         ::testing::Values(DType::kBFloat16, DType::kFloat16, DType::kFloat32),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace attnbench::testing
