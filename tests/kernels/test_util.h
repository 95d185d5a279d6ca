// Shared helpers of the kernels tests: a small valid problem to vary, and the element-by-element
// comparison of a stored output with a float64 expectation that the CPU and GPU backend tests
// share (CompareRows / ExpectAllClose), with the tolerances of each kind of backend.
#ifndef ATTNBENCH_TESTS_KERNELS_TEST_UTIL_H_
#define ATTNBENCH_TESTS_KERNELS_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
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

// The odd-sized problem the CPU backend tests share: B = 2, S_q = 37, S_kv = 53 (so S_q != S_kv
// and both are ragged against 64-wide tiles), D_qk = 40, D_v = 24, GQA 6/3, float32, prefill core.
inline Problem OddGqaProblem() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 37;
  p.seq_len_kv = 53;
  p.head_dim_qk = 40;
  p.head_dim_v = 24;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 6;
  p.layout.num_kv_heads = 3;
  p.dtype = DType::kFloat32;
  p.seed = 20240611;
  return p;
}

// Relative size of one unit in the last place of dtype (the spacing just above 1), and its
// smallest subnormal step. Float32 counts as exact here: UlpRelative is about storage rounding.
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

// Unit roundoff u: the largest relative error of rounding a value to the dtype (half an ulp):
// 2^-24 float32, 2^-11 float16, 2^-8 bfloat16, 2^-4 float8 e4m3.
inline double UnitRoundoff(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return std::ldexp(1.0, -11);
    case DType::kBFloat16:
      return std::ldexp(1.0, -8);
    case DType::kFloat8E4M3:
      return std::ldexp(1.0, -4);
    default:
      return std::ldexp(1.0, -24);
  }
}

// The bound every output element must meet against its float64 expectation:
//
//   |out - ref| <= rtol * |ref| + row_atol * max |ref over the element's row| + floor
//
// A row is the innermost dimension (one (b, i, h) row of D_v values of O, or one token's d_model
// values of Y). Attention computes each output row as a convex combination of value rows, so the
// errors made on the way (probabilities rounded to the dtype, scores, the float32 sums) scale with
// the row, not with the element, which may sit near zero: row_atol scales by the row's largest
// reference magnitude. rtol covers the output's own rounding to the dtype. floor is the dtype's
// subnormal step (an output that small cannot be nearer). A row whose every key is hidden has a
// zero reference and so must be exactly zero.
struct Tolerance {
  double rtol = 0;
  double row_atol = 0;
  double floor = 0;
};

// Backends that compute in float32 and round only the output to the dtype (cpu_reference): one
// ulp of the dtype relative (the float32 result may round to the other neighbour than the
// float64 value near a tie), plus `float32_noise` times the row's scale for the float32 math.
inline Tolerance StoredOutputTolerance(DType dtype, double float32_noise = 2e-5) {
  return {UlpRelative(dtype), float32_noise, SubnormalStep(dtype)};
}

// GPU kernels (cuda_flash, cuda_unfused, cuda_reference), where besides the output the
// probabilities P are rounded to the dtype before P V (the tensor-core operand), and Q, K are
// rounded to it again after RoPE in float32. With u the dtype's unit roundoff:
//
//   rtol = 2u: the output's rounding (u), and u more for the float32 result landing on the far
//     side of a tie from the float64 one.
//   row_atol = 8u: each p_j carries a relative error up to u, independent across keys, so the
//     error of o_d = sum_j p_j v_jd / l has a standard deviation of about u / sqrt(3) times the
//     row's own spread (the same sum over p_j^2 sets both); RoPE'd Q and K rounded to the dtype
//     add about as much through the scores. Over the ~10^7 elements of a full test run the
//     largest deviation is ~5.5 standard deviations, ~3.5u times the row's spread, and a row's
//     largest |ref| is at least ~1.2 times that spread for D_v >= 64: ~3u of the row maximum;
//     8u leaves a margin over 2x, which closeness_test.cc measures on a kernel emulated with
//     these roundings on every GPU test case and seed: its worst element must stay under half
//     the bound (measured: 0.21 of it in bfloat16 and float16, 0.07 in float32).
//
// Float32 storage has no rounded operands, only float32 math: there u is replaced by 2^-18
// (row_atol 3.1e-5, rtol 7.6e-6), the scores' float32 error at |s| up to ~40 (ALiBi over a long
// row) with expf and reordered sums on top. The bounds per dtype:
//   bfloat16: rtol 7.8e-3, row_atol 3.1e-2    float16: rtol 9.8e-4, row_atol 3.9e-3
//   float32:  rtol 7.6e-6, row_atol 3.1e-5
inline Tolerance TensorCoreKernelTolerance(DType dtype) {
  const double u = std::max(UnitRoundoff(dtype), std::ldexp(1.0, -18));
  return {2 * u, 8 * u, SubnormalStep(dtype)};
}

// A layer on a GPU backend (SCOPE_LAYER): the core's bound, plus the projections' roundings. Q, K
// and V are stored in the dtype after GEMMs whose float32 sums run in another order than the
// float64 reference's, so an element near a tie lands on the other neighbour (one ulp); those
// and O's rounding reach each Y element through W_o as a sum over H_out * D_v terms, like the
// CPU backend's layer (cpu_backend_test.cc: 3 ulps of the row), added to the core's row term.
// Derived, not fitted: LayerScopeMatchesReferenceAndSplitsItsTime passed under it on an H100
// (2026-12-07), with how much margin not yet measured.
inline Tolerance LayerKernelTolerance(DType dtype) {
  Tolerance t = TensorCoreKernelTolerance(dtype);
  if (dtype != DType::kFloat32) t.row_atol += 3 * UlpRelative(dtype);
  return t;
}

// cuda_unfused's backward (kernels/cuda/unfused/unfused_backward.h): its GEMMs take P and dS
// rounded to the dtype (the tensor-core operands), as a tensor-core forward takes P, and Q and K
// rounded again after RoPE; every other step is float32 (scores, the log-sum-exp, dP,
// D = sum P dP, the dQ, dK, dV sums, RoPE's transpose) and the gradients are rounded once. Each
// gradient element is such a sum of terms carrying independent relative errors up to u (dV_j
// over P_ij dO_i, dK_j over dS_ij q_i, dQ_i over dS_ij k_j), the forward's situation, so it takes
// the forward's bound in 16-bit dtypes: TensorCoreKernelTolerance. In float32 nothing is rounded
// and it takes cuda_reference's bound (one ulp of the dtype plus 1e-4 of the row: float32 sums
// whose terms cancel, a dS row summing to zero). backward_closeness_test.cc measures the
// emulated roundings on every case and seed of the GPU test against the float64 oracle: the
// worst element must stay under half the bound.
inline Tolerance UnfusedBackwardTolerance(DType dtype) {
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16)
    return TensorCoreKernelTolerance(dtype);
  return StoredOutputTolerance(dtype, 1e-4);
}

// cuda_flash's backward (kernels/cuda/flash/backward_sm80.cuh): the same roundings as
// cuda_unfused's (P and dS rounded to the dtype as the mma operands, Q and K rounded after RoPE,
// float32 scores, dP and sums, the gradients rounded once), except that D = <dO, O> takes O as its
// forward computed it in float32, from P rounded to the dtype before P V (FlashAttention's way),
// where cuda_unfused sums D = sum P dP in float32. The error that adds to D_i is the same for
// every key of the row, so it reaches dQ_i whole, as scale dD_i (P K)_i, instead of averaging out
// like the per-pair roundings: in bfloat16 the emulation (backward_closeness_test.cc, every case
// and seed of the GPU test) puts the worst dQ element at 0.51 of UnfusedBackwardTolerance's 8u
// (block_sparse_causal, whose rows keep few keys). row_atol is 10u here, which restores the
// required margin (worst element under half the bound); rtol and floor are the same.
// A query row with a single kept key has dQ = 0 exactly (P = 1, so dS = dP - D = 0); with D taken
// from O instead of from P the float32 roundings of D and of dP no longer cancel, and such a row
// comes out at float32 noise instead of zero (measured on an H100, 2026-12-07: up to 5.4e-7 where
// the reference row is exactly zero, in causal rows with more queries than keys, windows and
// probabilistic masks), which no row-scaled term covers. So the floor is float32's noise at the
// inputs' unit scale, 2^-18, instead of the dtype's subnormal step.
inline Tolerance FlashBackwardTolerance(DType dtype) {
  Tolerance t = UnfusedBackwardTolerance(dtype);
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16) t.row_atol *= 10.0 / 8.0;
  t.floor = std::max(t.floor, std::ldexp(1.0, -18));
  return t;
}

// The outcome of comparing every element of an output with its expectation.
struct CloseReport {
  int64_t elements = 0;
  int64_t failures = 0;    // elements outside the bound, non-finite ones included
  int64_t not_finite = 0;  // NaN or infinite outputs (a NaN-poisoned element never written)
  bool size_mismatch = false;
  // The element furthest outside (or nearest to) its bound: |out - ref| / bound, infinite for a
  // non-finite output or a nonzero error where the bound is zero.
  double worst_ratio = 0;
  int64_t worst = -1;  // flat index
  std::vector<int64_t> worst_coords;
  double worst_out = 0, worst_ref = 0, worst_row_max = 0, worst_bound = 0;
  Tolerance tolerance;

  bool ok() const { return !size_mismatch && failures == 0; }

  std::string Describe() const {
    std::ostringstream s;
    s.precision(4);
    if (size_mismatch) return "output and expectation differ in size";
    s << failures << " of " << elements << " elements outside |out - ref| <= " << tolerance.rtol
      << " |ref| + " << tolerance.row_atol << " max|ref row| + " << tolerance.floor << " ("
      << not_finite << " not finite)";
    if (worst < 0) return s.str();
    s << "; worst at [";
    for (size_t k = 0; k < worst_coords.size(); ++k) s << (k ? ", " : "") << worst_coords[k];
    s << "] (flat " << worst << "): got " << worst_out << ", expected " << worst_ref << " (row max "
      << worst_row_max << "), error " << std::fabs(worst_out - worst_ref) << ", bound "
      << worst_bound << ", " << worst_ratio << "x the bound";
    return s.str();
  }
};

// Compares out with ref element by element under `tol`. `shape` is the tensor's shape (its last
// dimension is the row); its product must equal the sizes.
inline CloseReport CompareRows(const std::vector<float>& out, const std::vector<double>& ref,
                               const std::vector<int64_t>& shape, const Tolerance& tol) {
  CloseReport r;
  r.tolerance = tol;
  r.elements = static_cast<int64_t>(ref.size());
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  if (out.size() != ref.size() || shape.empty() || count != r.elements) {
    r.size_mismatch = true;
    return r;
  }
  const int64_t row = shape.back();
  for (int64_t start = 0; start < r.elements; start += row) {
    double row_max = 0;
    for (int64_t k = start; k < start + row; ++k) row_max = std::max(row_max, std::fabs(ref[k]));
    for (int64_t k = start; k < start + row; ++k) {
      const double o = out[k];
      const double bound = tol.rtol * std::fabs(ref[k]) + tol.row_atol * row_max + tol.floor;
      const double diff = std::fabs(o - ref[k]);
      double ratio;
      if (!std::isfinite(o)) {
        ++r.not_finite;
        ratio = std::numeric_limits<double>::infinity();
      } else if (diff == 0) {
        ratio = 0;
      } else {
        ratio = bound > 0 ? diff / bound : std::numeric_limits<double>::infinity();
      }
      if (!(diff <= bound)) ++r.failures;
      if (ratio > r.worst_ratio || r.worst < 0) {
        r.worst_ratio = ratio;
        r.worst = k;
        r.worst_out = o;
        r.worst_ref = ref[k];
        r.worst_row_max = row_max;
        r.worst_bound = bound;
      }
    }
  }
  if (r.worst >= 0) {
    r.worst_coords.assign(shape.size(), 0);
    int64_t rest = r.worst;
    for (size_t d = shape.size(); d-- > 0;) {
      r.worst_coords[d] = rest % shape[d];
      rest /= shape[d];
    }
  }
  return r;
}

// CompareRows as a gtest expectation: fails with the count and the worst element's coordinates.
inline void ExpectAllClose(const std::vector<float>& out, const std::vector<double>& ref,
                           const std::vector<int64_t>& shape, const Tolerance& tol,
                           const std::string& context) {
  const CloseReport r = CompareRows(out, ref, shape, tol);
  EXPECT_TRUE(r.ok()) << context << ": " << r.Describe();
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
