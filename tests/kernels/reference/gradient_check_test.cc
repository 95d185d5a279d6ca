// CheckGradients: one report per tensor (dq, dk, dv) and their worst at the top; planted errors
// and non-finite elements (outside the sample too) fail exactly the tensor they are in; the
// sampling plan and its cost estimate against what the oracle really evaluates; and the backward
// tolerances against what two kinds of kernel produce on all three dtypes: cpu_reference (float32
// math, gradients rounded once) and an emulated tensor-core backward that also rounds its
// operands to the dtype the way FlashAttention-2 does (below).
#include "kernels/reference/gradient_check.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/backward64.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/modifiers.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::FullOracleGradients;
using testing::OracleGradients;

// B = 2, S_q = 19, S_kv = 31, D_qk = 12, D_v = 10, GQKVA 2 x 3, float32, PHASE_BACKWARD.
Problem Odd() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 19;
  p.seq_len_kv = 31;
  p.head_dim_qk = 12;
  p.head_dim_v = 10;
  p.layout.kind = LayoutKind::kGqkva;
  p.layout.query_groups = 2;
  p.layout.kv_groups = 3;
  p.dtype = DType::kFloat32;
  p.phase = Phase::kBackward;
  p.seed = 5;
  return p;
}

FloatTensor AsTensor(const std::vector<double>& v, const FloatTensor& like, DType dtype) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = like.shape;
  for (double x : v) t.values.push_back(RoundToDType(static_cast<float>(x), dtype));
  return t;
}

// The oracle's own gradients, stored in the dtype.
GradientTensors OracleAsStored(const Problem& p, const AttentionInputs& in) {
  const OracleGradients g = FullOracleGradients(p, in);
  GradientTensors out;
  out.dq = AsTensor(g.dq, in.query, p.dtype);
  out.dk = AsTensor(g.dk, in.key, p.dtype);
  out.dv = AsTensor(g.dv, in.value, p.dtype);
  return out;
}

struct Prepared {
  Problem problem;
  AttentionInputs inputs;
};
Prepared Prepare(const Problem& raw) {
  Prepared r{NormalizeProblem(raw), {}};
  EXPECT_TRUE(ValidateProblem(r.problem).ok()) << ValidateProblem(r.problem);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(r.problem);
  EXPECT_TRUE(in.ok()) << in.status();
  if (in.ok()) r.inputs = *std::move(in);
  return r;
}

CheckOptions Full() {
  CheckOptions o;
  o.full = true;
  return o;
}

TEST(GradientCheckTest, ReportsEachTensorAndTheWorstAtTheTop) {
  Problem raw = Odd();
  raw.mask.kind = MaskKind::kCausal;
  raw.rope.enabled = true;
  const Prepared p = Prepare(raw);
  GradientTensors g = OracleAsStored(p.problem, p.inputs);
  absl::StatusOr<CorrectnessReport> r = CheckGradients(p.problem, p.inputs, g, Full());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tensors.size(), 3u);
  EXPECT_EQ(r->tensors[0].name, "dq");
  EXPECT_EQ(r->tensors[1].name, "dk");
  EXPECT_EQ(r->tensors[2].name, "dv");
  EXPECT_TRUE(r->passed);
  for (const TensorCheckReport& t : r->tensors) {
    EXPECT_TRUE(t.passed) << t.name;
    EXPECT_LT(t.relative_error, 1e-6) << t.name;  // float32 storage of the oracle itself
    EXPECT_EQ(t.tolerance, GradientToleranceFor(p.problem));
    EXPECT_EQ(t.rows_checked, t.rows_total) << t.name;
  }
  EXPECT_EQ(r->tensors[0].rows_total, 2 * 19 * 2);  // B S_q H_q
  EXPECT_EQ(r->tensors[1].rows_total, 2 * 31 * 3);  // B S_kv H_kv
  EXPECT_EQ(r->rows_total, 2 * 19 * 2 + 2 * (2 * 31 * 3));
  EXPECT_EQ(r->rows_checked, r->rows_total);

  // A planted error in one dK element fails dK alone, and the top level with it.
  const float before = g.dk.values[777];
  g.dk.values[777] += 0.5f;
  r = CheckGradients(p.problem, p.inputs, g, Full());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->passed);
  EXPECT_TRUE(r->tensors[0].passed);
  EXPECT_FALSE(r->tensors[1].passed);
  EXPECT_TRUE(r->tensors[2].passed);
  EXPECT_EQ(r->relative_error, r->tensors[1].relative_error);
  EXPECT_NEAR(r->max_abs_error, 0.5, 1e-5);
  EXPECT_GT(r->relative_error, r->tolerance);
  g.dk.values[777] = before;

  // So does a dV off by a small relative amount everywhere, above the tolerance.
  for (float& v : g.dv.values) v *= 1.001f;
  r = CheckGradients(p.problem, p.inputs, g, Full());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->tensors[2].passed);
  EXPECT_NEAR(r->tensors[2].relative_error, 1e-3, 1e-5);
  EXPECT_TRUE(r->tensors[0].passed && r->tensors[1].passed);
}

TEST(GradientCheckTest, NonFiniteElementsFailOutsideTheSample) {
  Problem raw = Odd();
  raw.seq_len_q = 200;
  raw.seq_len_kv = 150;
  const Prepared p = Prepare(raw);
  GradientTensors g = OracleAsStored(p.problem, p.inputs);
  CheckOptions sampled;
  sampled.max_rows = 5;  // 5 of 800 dQ rows, 1 of 6 (b, kv head) groups
  const GradientCheckPlan plan = PlanGradientCheck(ShapesOf(p.problem).value(), sampled);
  ASSERT_EQ(plan.kv_groups.size(), 1u);
  // An infinity in a dV row of a group the sample leaves out, a NaN in an unsampled dQ row.
  const int64_t unsampled_group = plan.kv_groups[0] == 0 ? 1 : 0;  // b = 0, kv head 0 or 1
  g.dv.values[(7 * 3 + unsampled_group) * 10 + 4] = std::numeric_limits<float>::infinity();
  int64_t unsampled_row = 0;
  while (std::count(plan.dq_rows.begin(), plan.dq_rows.end(), unsampled_row)) ++unsampled_row;
  g.dq.values[unsampled_row * 12] = std::numeric_limits<float>::quiet_NaN();
  const absl::StatusOr<CorrectnessReport> r = CheckGradients(p.problem, p.inputs, g, sampled);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tensors[0].non_finite_elements, 1);
  EXPECT_EQ(r->tensors[1].non_finite_elements, 0);
  EXPECT_EQ(r->tensors[2].non_finite_elements, 1);
  EXPECT_FALSE(r->tensors[0].passed);
  EXPECT_TRUE(r->tensors[1].passed);
  EXPECT_FALSE(r->tensors[2].passed);
  EXPECT_FALSE(std::isnan(r->relative_error));  // the compared rows are fine
  EXPECT_EQ(r->non_finite_elements, 2);
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->tensors[0].rows_checked, 5);
  EXPECT_EQ(r->tensors[2].rows_checked, 150);
}

TEST(GradientCheckTest, RefusesWrongShapes) {
  const Prepared p = Prepare(Odd());
  GradientTensors g = OracleAsStored(p.problem, p.inputs);
  g.dk.shape = g.dv.shape;
  const absl::Status s = CheckGradients(p.problem, p.inputs, g, Full()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gradient dk has shape"), std::string::npos) << s;
}

TEST(GradientCheckPlanTest, SamplesRowsAndWholeGroups) {
  Problem raw = Odd();
  raw.batch_size = 3;
  raw.seq_len_q = 100;  // 600 dQ rows; 9 groups of 100 query rows x 2 heads
  const ProblemShapes s = ShapesOf(NormalizeProblem(raw)).value();
  CheckOptions o;
  o.max_rows = 450;
  o.seed = 3;
  const GradientCheckPlan plan = PlanGradientCheck(s, o);
  EXPECT_EQ(plan.dq_rows_total, 600);
  EXPECT_EQ(plan.dq_rows.size(), 450u);
  EXPECT_EQ(plan.kv_groups_total, 9);
  EXPECT_EQ(plan.kv_groups.size(), 2u);  // 450 / (100 rows x 2 heads per kv head)
  EXPECT_TRUE(std::is_sorted(plan.kv_groups.begin(), plan.kv_groups.end()));
  std::vector<int64_t> rows = plan.dq_rows;
  std::sort(rows.begin(), rows.end());
  EXPECT_EQ(std::unique(rows.begin(), rows.end()), rows.end());
  EXPECT_LT(rows.back(), 600);
  // The same seed draws the same sample; another seed another one.
  EXPECT_EQ(PlanGradientCheck(s, o).dq_rows, plan.dq_rows);
  o.seed = 4;
  EXPECT_NE(PlanGradientCheck(s, o).dq_rows, plan.dq_rows);
  // At least one group, whatever max_rows says; every row and group when full or small enough.
  o.max_rows = 1;
  EXPECT_EQ(PlanGradientCheck(s, o).kv_groups.size(), 1u);
  EXPECT_EQ(PlanGradientCheck(s, o).dq_rows.size(), 1u);
  o.full = true;
  EXPECT_EQ(PlanGradientCheck(s, o).dq_rows.size(), 600u);
  EXPECT_EQ(PlanGradientCheck(s, o).kv_groups.size(), 9u);
  o.full = false;
  o.max_rows = 1800;  // 9 groups x 200 rows
  EXPECT_EQ(PlanGradientCheck(s, o).kv_groups.size(), 9u);
}

// What the oracle evaluates for a plan, counted by the oracle itself.
double OraclePairs(const Prepared& p, const GradientCheckPlan& plan) {
  absl::StatusOr<Backward64> oracle = Backward64::Create(p.problem, p.inputs);
  EXPECT_TRUE(oracle.ok());
  const ProblemShapes& s = oracle->shapes();
  uint64_t pairs = 0;
  const int64_t hq = s.heads.num_query_heads, hkv = s.heads.num_kv_heads;
  for (int64_t r : plan.dq_rows) {
    oracle->QueryGradRow(r / (s.seq_q * hq), (r / hq) % s.seq_q, static_cast<int>(r % hq), &pairs);
  }
  for (int64_t g : plan.kv_groups) {
    pairs += oracle->KeyValueGradGroup(g / hkv, static_cast<int>(g % hkv), 2).pairs;
  }
  return static_cast<double>(pairs);
}

TEST(GradientCheckCostTest, CountsWhatTheOracleEvaluates) {
  Problem raw = Odd();
  raw.seq_len_q = 90;
  raw.seq_len_kv = 70;
  raw.mask.kind = MaskKind::kCausal;
  const Prepared p = Prepare(raw);
  const WorkCounts counts = CountWork(p.problem).value();
  const ProblemShapes s = ShapesOf(p.problem).value();
  // Full: exact (each row once for dQ, each head's pairs twice for dK, dV).
  const GradientCheckCost full = EstimateGradientCheckCost(p.problem, counts, Full());
  // (Up to the rounding of the average per row the estimate goes through.)
  const double pairs = static_cast<double>(counts.kept_pairs);
  EXPECT_NEAR(full.kept_pairs, 3 * pairs, 1e-9 * pairs);
  EXPECT_NEAR(full.kept_pairs, OraclePairs(p, PlanGradientCheck(s, Full())), 1e-9 * pairs);
  EXPECT_NEAR(full.flops, 8.0 * (12 + 10) * pairs, 1e-9 * full.flops);
  EXPECT_EQ(full.dq_rows, 2 * 90 * 2);
  EXPECT_EQ(full.kv_groups, 6);
  EXPECT_EQ(full.kv_rows, 6 * 70);
  // Sampled: whole groups are exact (every head keeps the same pairs), dQ rows use the average
  // per row, so the estimate is close but not exact under a causal mask.
  CheckOptions sampled;
  sampled.max_rows = 100;
  const GradientCheckCost some = EstimateGradientCheckCost(p.problem, counts, sampled);
  EXPECT_EQ(some.dq_rows, 100);
  EXPECT_EQ(some.kv_groups, 1);
  const double actual = OraclePairs(p, PlanGradientCheck(s, sampled));
  EXPECT_NEAR(some.kept_pairs, actual, 0.1 * actual);
  EXPECT_LT(some.kept_pairs, full.kept_pairs / 4);
}

// ---------------------------------------------------------------------------------------------
// The tolerances. GradientToleranceFor bounds ||g - ref|| / ||ref|| for each of dQ, dK, dV. The
// kernels it must admit round, besides the gradients themselves, the operands of their matmuls
// to the dtype; EmulatedTensorCoreBackward does the same in double so that only those roundings
// differ from the oracle: Q and K after RoPE (the forward's tensor-core operands), O as stored
// (what D = <dO, O> reads in a backward-only run), P for dV = P^T dO, dS for dQ = dS K and
// dK = dS^T Q, and dQ, dK, dV at the end.

int64_t Offset(int64_t b, int64_t s, int64_t h, int64_t seq, int64_t heads, int64_t dim) {
  return ((b * seq + s) * heads + h) * dim;
}

GradientTensors EmulatedTensorCoreBackward(const Problem& p, const AttentionInputs& in) {
  const ProblemShapes s = ShapesOf(p).value();
  const DType dt = p.dtype;
  auto round = [dt](double x) {
    return static_cast<double>(RoundToDType(static_cast<float>(x), dt));
  };
  const int64_t sq = s.seq_q, skv = s.seq_kv, dqk = s.dim_qk, dv = s.dim_v;
  const int64_t hq = s.heads.num_query_heads, hkv = s.heads.num_kv_heads;
  const int64_t hout = s.heads.num_output_heads;
  const MaskEvaluator mask(p);
  const double scale = *p.scale;
  std::vector<double> inv_freq, slopes;
  if (p.rope.enabled) inv_freq = RopeInverseFrequencies(*p.rope.theta, *p.rope.rotary_dims);
  if (p.alibi.enabled) slopes = AlibiSlopes(p.alibi, static_cast<int>(hout));
  std::vector<double> dq(NumElements(s.query)), dk(NumElements(s.key)), dvv(NumElements(s.value));
  std::vector<double> q(sq * dqk), k(skv * dqk), sc(sq * skv), pr(sq * skv);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < hout; ++h) {
      const int qh = s.heads.map[h].query_head, kh = s.heads.map[h].kv_head;
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t d = 0; d < dqk; ++d)
          q[i * dqk + d] = in.query.values[Offset(b, i, qh, sq, hq, dqk) + d];
        if (!inv_freq.empty()) ApplyRope(&q[i * dqk], i + mask.offset(), inv_freq);
        for (int64_t d = 0; d < dqk; ++d) q[i * dqk + d] = round(q[i * dqk + d]);
      }
      for (int64_t j = 0; j < skv; ++j) {
        for (int64_t d = 0; d < dqk; ++d)
          k[j * dqk + d] = in.key.values[Offset(b, j, kh, skv, hkv, dqk) + d];
        if (!inv_freq.empty()) ApplyRope(&k[j * dqk], j, inv_freq);
        for (int64_t d = 0; d < dqk; ++d) k[j * dqk + d] = round(k[j * dqk + d]);
      }
      for (int64_t i = 0; i < sq; ++i) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < skv; ++j) {
          double x = -std::numeric_limits<double>::infinity();
          if (mask.Keeps(b, static_cast<int>(h), i, j)) {
            x = 0;
            for (int64_t d = 0; d < dqk; ++d) x += q[i * dqk + d] * k[j * dqk + d];
            x *= scale;
            if (!slopes.empty()) x += slopes[h] * static_cast<double>(j - i - mask.offset());
            if (p.softcap.enabled) x = Softcap(x, p.softcap.cap);
          }
          sc[i * skv + j] = x;
          m = std::max(m, x);
        }
        double l = 0;
        for (int64_t j = 0; j < skv; ++j) {
          pr[i * skv + j] = std::isinf(m) ? 0 : std::exp(sc[i * skv + j] - m);
          l += pr[i * skv + j];
        }
        for (int64_t j = 0; j < skv; ++j) pr[i * skv + j] = l > 0 ? pr[i * skv + j] / l : 0;
        const float* g = &in.grad_output.values[Offset(b, i, h, sq, hout, dv)];
        double dsum = 0;  // D from O as stored
        for (int64_t e = 0; e < dv; ++e) {
          double o = 0;
          for (int64_t j = 0; j < skv; ++j) {
            o += pr[i * skv + j] * in.value.values[Offset(b, j, kh, skv, hkv, dv) + e];
          }
          dsum += round(o) * g[e];
        }
        for (int64_t j = 0; j < skv; ++j) {
          const double pij = pr[i * skv + j];
          if (pij == 0) continue;
          const float* v = &in.value.values[Offset(b, j, kh, skv, hkv, dv)];
          double dp = 0;
          for (int64_t e = 0; e < dv; ++e) dp += g[e] * v[e];
          double ds = pij * (dp - dsum);
          if (p.softcap.enabled) ds *= SoftcapDerivative(sc[i * skv + j], p.softcap.cap);
          const double p16 = round(pij), ds16 = round(ds);
          for (int64_t e = 0; e < dv; ++e) dvv[Offset(b, j, kh, skv, hkv, dv) + e] += p16 * g[e];
          for (int64_t e = 0; e < dqk; ++e) {
            dq[Offset(b, i, qh, sq, hq, dqk) + e] += scale * ds16 * k[j * dqk + e];
            dk[Offset(b, j, kh, skv, hkv, dqk) + e] += scale * ds16 * q[i * dqk + e];
          }
        }
      }
    }
    if (!inv_freq.empty()) {
      for (int64_t i = 0; i < sq; ++i) {
        for (int qh = 0; qh < hq; ++qh) {
          ApplyRopeTranspose(&dq[Offset(b, i, qh, sq, hq, dqk)], i + mask.offset(), inv_freq);
        }
      }
      for (int64_t j = 0; j < skv; ++j) {
        for (int kh = 0; kh < hkv; ++kh)
          ApplyRopeTranspose(&dk[Offset(b, j, kh, skv, hkv, dqk)], j, inv_freq);
      }
    }
  }
  GradientTensors out;
  out.dq = AsTensor(dq, in.query, dt);
  out.dk = AsTensor(dk, in.key, dt);
  out.dv = AsTensor(dvv, in.value, dt);
  return out;
}

GradientTensors CpuReferenceBackward(const Problem& p) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return {};
  EXPECT_TRUE((*w)->RunTimed().ok());
  return (*w)->Gradients().value();
}

struct Shape {
  std::string name;
  std::function<void(Problem&)> edit;
};

// Head dims and lengths of real models (64, 128), each layout family, every modifier, causal and
// not: where rounding errors pile up as they will on a GPU.
std::vector<Shape> ToleranceShapes() {
  auto base = [](Problem& p, int64_t sq, int64_t skv, int d) {
    p.batch_size = 1;
    p.seq_len_q = sq;
    p.seq_len_kv = skv;
    p.head_dim_qk = d;
    p.head_dim_v = d;
  };
  return {
      {"mha_d64_causal",
       [=](Problem& p) {
         base(p, 256, 256, 64);
         p.layout = {};
         p.layout.kind = LayoutKind::kMha;
         p.layout.num_heads = 2;
         p.mask.kind = MaskKind::kCausal;
       }},
      {"gqa_d128_rope",
       [=](Problem& p) {
         base(p, 160, 200, 128);
         p.layout = {};
         p.layout.kind = LayoutKind::kGqa;
         p.layout.num_query_heads = 4;
         p.layout.num_kv_heads = 1;
         p.rope.enabled = true;
       }},
      {"gqkva_d64_all_modifiers",
       [=](Problem& p) {
         base(p, 192, 192, 64);
         p.mask.kind = MaskKind::kCausal;
         p.rope.enabled = true;
         p.alibi.enabled = true;
         p.softcap = {true, 20.0};
         p.input_scale = 2.0;
       }},
      // Long rows: P ~ 1 / S_kv, where float16 holds P and dS only as subnormals.
      {"mha_d32_long_rows",
       [=](Problem& p) {
         base(p, 24, 32768, 32);
         p.layout = {};
         p.layout.kind = LayoutKind::kMha;
         p.layout.num_heads = 1;
         p.input_scale = 0.5;
       }},
      {"mqa_d64_window_softcap",
       [=](Problem& p) {
         base(p, 300, 300, 64);
         p.layout = {};
         p.layout.kind = LayoutKind::kMqa;
         p.layout.num_heads = 2;
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = 64;
         p.mask.right_tokens = 0;
         p.softcap = {true, 5.0};
         p.input_scale = 1.5;
       }},
  };
}

TEST(GradientToleranceTest, AdmitsFloat32MathAndRoundedOperandsWithRoomToSpare) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    double worst_cpu = 0, worst_emulated = 0;
    for (const Shape& shape : ToleranceShapes()) {
      Problem raw = Odd();
      shape.edit(raw);
      raw.dtype = dtype;
      const Prepared p = Prepare(raw);
      const std::string context = shape.name + " " + DTypeName(dtype);
      const double tolerance = GradientToleranceFor(p.problem);
      for (const auto& [kind, g] :
           {std::pair{"cpu_reference", CpuReferenceBackward(p.problem)},
            std::pair{"emulated", EmulatedTensorCoreBackward(p.problem, p.inputs)}}) {
        const absl::StatusOr<CorrectnessReport> r = CheckGradients(p.problem, p.inputs, g, Full());
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_TRUE(r->passed) << context << " " << kind;
        for (const TensorCheckReport& t : r->tensors) {
          double& worst = std::string(kind) == "emulated" ? worst_emulated : worst_cpu;
          worst = std::max(worst, t.relative_error / tolerance);
        }
      }
    }
    std::cout << DTypeName(dtype) << ": worst relative error / tolerance: cpu_reference "
              << worst_cpu << ", emulated tensor-core backward " << worst_emulated << "\n";
    EXPECT_LT(worst_cpu, 0.25) << DTypeName(dtype);
    EXPECT_LT(worst_emulated, 0.5) << DTypeName(dtype);
  }
}

}  // namespace
}  // namespace attnbench
