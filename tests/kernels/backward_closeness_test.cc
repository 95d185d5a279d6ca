// The per-element bound the GPU backward test holds cuda_unfused's dQ, dK, dV to
// (UnfusedBackwardTolerance, test_util.h), measured without a GPU: cuda_unfused's backward
// emulated on the host with the roundings it makes (kernels/cuda/unfused/unfused_backward.h: Q and
// K rounded to the dtype after RoPE, float32 scores and log-sum-exp, P and dS rounded to the dtype
// as GEMM operands, float32 accumulators, RoPE's transpose in float32, the gradients rounded
// once), on exactly the problems and seeds of the GPU test (backward_cases.h), against the
// float64 oracle: its worst element must stay under half the bound, the margin the device run
// relies on. The server's relative-error check (CheckGradients) must pass on it too. The same for
// cuda_flash's backward (FlashBackwardTolerance), whose roundings differ in D = <dO, O> only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/backward_cases.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/test_util.h"

namespace attnbench::testing {
namespace {

int64_t Offset(int64_t b, int64_t s, int64_t h, int64_t seq, int64_t heads, int64_t dim) {
  return ((b * seq + s) * heads + h) * dim;
}

FloatTensor AsTensor(const std::vector<double>& values, const FloatTensor& like, DType dtype,
                     const std::function<void(float*, int64_t)>& finish, int64_t dim) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = like.shape;
  t.values.assign(values.begin(), values.end());  // the float32 accumulators
  for (int64_t row = 0; row * dim < static_cast<int64_t>(t.values.size()); ++row) {
    finish(&t.values[row * dim], row);
  }
  for (float& v : t.values) v = RoundToDType(v, dtype);
  return t;
}

// Whose roundings an emulation makes.
enum class Emulated { kUnfused, kFlash };

// cuda_unfused's backward (after its forward's log-sum-exp) with its roundings, in float32 where
// it computes in float32; the GEMMs' float32 sums are taken in double (their rounding is far below
// the bound in every dtype). With Emulated::kFlash, cuda_flash's backward (kernels/cuda/flash/
// backward_sm80.cuh), which differs in one step: D = <dO, O> with O as its forward computed it in
// float32 before rounding, from probabilities rounded to the dtype as the P V operand (taken here
// relative to the row's final maximum; the kernel's online softmax rounds them relative to the
// running one, an error of the same size).
GradientTensors EmulateBackward(const Problem& p, const AttentionInputs& in, Emulated which) {
  const ProblemShapes s = ShapesOf(p).value();
  const DType dt = p.dtype;
  const int64_t sq = s.seq_q, skv = s.seq_kv, dqk = s.dim_qk, dv = s.dim_v;
  const int64_t hq = s.heads.num_query_heads, hkv = s.heads.num_kv_heads;
  const int64_t hout = s.heads.num_output_heads;
  const MaskEvaluator mask(p);
  const int64_t offset = mask.offset();
  const float scale = static_cast<float>(*p.scale);
  const int half = p.rope.enabled ? *p.rope.rotary_dims / 2 : 0;
  std::vector<double> inv_freq;
  if (p.rope.enabled) inv_freq = RopeInverseFrequencies(*p.rope.theta, *p.rope.rotary_dims);
  std::vector<float> slopes;
  if (p.alibi.enabled) {
    for (double x : AlibiSlopes(p.alibi, static_cast<int>(hout))) {
      slopes.push_back(static_cast<float>(x));
    }
  }
  const float cap = p.softcap.enabled ? static_cast<float>(p.softcap.cap) : 0.0f;
  auto cos_sin = [&](int64_t pos) {
    std::vector<float> t(2 * std::max(half, 1));
    if (half > 0) RopeCosSin(pos, inv_freq, t.data());
    return t;
  };
  // A row as the GEMMs read it: rotated in float32, stored in the dtype.
  auto operand = [&](const float* row, int64_t pos) {
    std::vector<float> x(row, row + dqk);
    if (half > 0) {
      ApplyRope(x.data(), cos_sin(pos).data(), half);
      for (float& v : x) v = RoundToDType(v, dt);
    }
    return x;
  };

  std::vector<double> dq(NumElements(s.query)), dk(NumElements(s.key)), dvv(NumElements(s.value));
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < hout; ++h) {
      const int qh = s.heads.map[h].query_head, kh = s.heads.map[h].kv_head;
      std::vector<std::vector<float>> q(sq), k(skv);
      for (int64_t i = 0; i < sq; ++i) {
        q[i] = operand(&in.query.values[Offset(b, i, qh, sq, hq, dqk)], i + offset);
      }
      for (int64_t j = 0; j < skv; ++j) {
        k[j] = operand(&in.key.values[Offset(b, j, kh, skv, hkv, dqk)], j);
      }
      for (int64_t i = 0; i < sq; ++i) {
        // The modified scores (ModifyScore after the GEMM's scale), the forward's log-sum-exp.
        std::vector<float> sc(skv, -std::numeric_limits<float>::infinity());
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < skv; ++j) {
          if (!mask.Keeps(b, static_cast<int>(h), i, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < dqk; ++d) dot += static_cast<double>(q[i][d]) * k[j][d];
          float t = scale * static_cast<float>(dot);
          if (!slopes.empty()) t += slopes[h] * static_cast<float>(j - (i + offset));
          if (cap > 0) t = cap * std::tanh(t / cap);
          sc[j] = t;
          m = std::max(m, t);
        }
        if (m == -std::numeric_limits<float>::infinity()) continue;  // no key: no gradient
        float l = 0;
        for (int64_t j = 0; j < skv; ++j) l += std::exp(sc[j] - m);
        const float lse = m + std::log(l);
        const float* g = &in.grad_output.values[Offset(b, i, h, sq, hout, dv)];
        std::vector<float> pr(skv, 0.0f), dp(skv, 0.0f);
        double row_term = 0;
        std::vector<double> o(dv, 0.0);  // kFlash: the forward's float32 O, times l
        for (int64_t j = 0; j < skv; ++j) {
          if (sc[j] == -std::numeric_limits<float>::infinity()) continue;
          const float* v = &in.value.values[Offset(b, j, kh, skv, hkv, dv)];
          double x = 0;
          for (int64_t e = 0; e < dv; ++e) x += static_cast<double>(g[e]) * v[e];
          dp[j] = static_cast<float>(x);
          pr[j] = std::exp(sc[j] - lse);
          row_term += static_cast<double>(pr[j]) * dp[j];
          if (which == Emulated::kFlash) {
            const double p16 = RoundToDType(std::exp(sc[j] - m), dt);
            for (int64_t e = 0; e < dv; ++e) o[e] += p16 * v[e];
          }
        }
        if (which == Emulated::kFlash) {
          row_term = 0;
          for (int64_t e = 0; e < dv; ++e) {
            row_term += static_cast<double>(g[e]) * static_cast<float>(o[e] / l);
          }
        }
        const float d_i = static_cast<float>(row_term);
        for (int64_t j = 0; j < skv; ++j) {
          if (sc[j] == -std::numeric_limits<float>::infinity()) continue;
          float ds = pr[j] * (dp[j] - d_i);
          if (cap > 0) ds *= SoftcapDerivative(sc[j], cap);
          const double p16 = RoundToDType(pr[j], dt), ds16 = RoundToDType(ds, dt);
          for (int64_t e = 0; e < dv; ++e) dvv[Offset(b, j, kh, skv, hkv, dv) + e] += p16 * g[e];
          for (int64_t e = 0; e < dqk; ++e) {
            dq[Offset(b, i, qh, sq, hq, dqk) + e] += scale * ds16 * k[j][e];
            dk[Offset(b, j, kh, skv, hkv, dqk) + e] += scale * ds16 * q[i][e];
          }
        }
      }
    }
  }
  // Out of the accumulators: RoPE's transpose in float32 at each row's position, then the dtype.
  auto rotate_back = [&](int64_t seq, int64_t heads, int64_t pos_offset) {
    return [&, seq, heads, pos_offset](float* row, int64_t r) {
      if (half > 0) ApplyRopeTranspose(row, cos_sin((r / heads) % seq + pos_offset).data(), half);
    };
  };
  GradientTensors out;
  out.dq = AsTensor(dq, in.query, dt, rotate_back(sq, hq, offset), dqk);
  out.dk = AsTensor(dk, in.key, dt, rotate_back(skv, hkv, 0), dqk);
  out.dv = AsTensor(
      dvv, in.value, dt, [](float*, int64_t) {}, dv);
  return out;
}

struct Worst {
  double ratio = 0;
  std::string where;
};

// Emulates case `c` of `problem` and compares each gradient with the oracle under the bound.
void Measure(const Problem& raw, const std::string& name, Worst& worst,
             Emulated which = Emulated::kUnfused) {
  const Problem p = NormalizeProblem(raw);
  ASSERT_TRUE(ValidateProblem(p).ok()) << name << ": " << ValidateProblem(p);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok()) << in.status();
  const GradientTensors g = EmulateBackward(p, *in, which);
  const OracleGradients ref = FullOracleGradients(p, *in);
  const Tolerance tol = which == Emulated::kFlash ? FlashBackwardTolerance(p.dtype)
                                                  : UnfusedBackwardTolerance(p.dtype);
  const std::string context = name + "/" + DTypeName(p.dtype);
  for (const auto& [what, out, expected] :
       {std::tuple{"dQ", &g.dq, &ref.dq}, std::tuple{"dK", &g.dk, &ref.dk},
        std::tuple{"dV", &g.dv, &ref.dv}}) {
    const CloseReport r = CompareRows(out->values, *expected, out->shape, tol);
    EXPECT_TRUE(r.ok()) << context << " " << what << ": " << r.Describe();
    if (r.worst_ratio > worst.ratio) {
      worst.ratio = r.worst_ratio;
      worst.where = context + " " + what + ": " + r.Describe();
    }
  }
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report = CheckGradients(p, *in, g, full);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << context << ": relative error " << report->relative_error;
}

TEST(UnfusedBackwardClosenessTest, EmulatedRoundingsStayUnderHalfTheBoundOnEveryGpuCase) {
  const int cases = static_cast<int>(GpuBackwardCases().size());
  for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    Worst worst;
    for (int index = 0; index < cases; ++index) {
      Measure(GpuBackwardCaseProblem(index, dtype), GpuBackwardCases()[index].name, worst);
    }
    std::cout << DTypeName(dtype) << ": worst element / bound " << worst.ratio << " at "
              << worst.where << "\n";
    EXPECT_LT(worst.ratio, 0.5) << worst.where;
  }
}

// The GPU test's longer problem (several hundred rows each way, D = 128, GQA 8/2, causal RoPE).
TEST(UnfusedBackwardClosenessTest, LongerCausalGqaStaysUnderHalfTheBound) {
  Problem p = GpuBackwardBaseProblem();
  SetLongerGqa(p);
  Worst worst;
  Measure(p, "longer_causal_gqa", worst);
  std::cout << "longer: worst element / bound " << worst.ratio << " at " << worst.where << "\n";
  EXPECT_LT(worst.ratio, 0.5) << worst.where;
}

// cuda_flash's backward (FlashBackwardTolerance), in the 16-bit dtypes it runs, on the same cases
// and seeds as its GPU test (cuda_backward_test.cc, CudaFlashBackwardKernelTest) and the longer
// problem.
TEST(FlashBackwardClosenessTest, EmulatedRoundingsStayUnderHalfTheBoundOnEveryGpuCase) {
  const int cases = static_cast<int>(GpuBackwardCases().size());
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    Worst worst;
    for (int index = 0; index < cases; ++index) {
      Measure(GpuBackwardCaseProblem(index, dtype), GpuBackwardCases()[index].name, worst,
              Emulated::kFlash);
    }
    std::cout << DTypeName(dtype) << ": worst element / bound " << worst.ratio << " at "
              << worst.where << "\n";
    EXPECT_LT(worst.ratio, 0.5) << worst.where;
  }
  Problem p = GpuBackwardBaseProblem();
  SetLongerGqa(p);
  Worst worst;
  Measure(p, "longer_causal_gqa", worst, Emulated::kFlash);
  for (const NamedProblem& extra : FlashBackwardTileProblems()) {
    Measure(extra.problem, extra.name, worst, Emulated::kFlash);
  }
  std::cout << "longer and tile problems: worst element / bound " << worst.ratio << " at "
            << worst.where << "\n";
  EXPECT_LT(worst.ratio, 0.5) << worst.where;
}

}  // namespace
}  // namespace attnbench::testing
