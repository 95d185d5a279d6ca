// cpu_reference with client expressions (spec.score_mod, spec.mask_mod, spec.aux): each case
// writes its expression twice, once as text for the backend and once as C++ for the tests' own
// float64 attention (naive_attention.h), and every output element must agree on fresh inputs of
// odd sizes. Expressions equivalent to a built-in (ALiBi, softcap, causal, window) must also give
// the built-in's output, and the float64 oracle's check must pass; the same for the backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/check.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"
#include "tests/kernels/expression_cases.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::AllBuiltins;
using testing::Aux;
using testing::Bias;
using testing::BiasTable;
using testing::DocIds;
using testing::DocOf;
using testing::kSlopes;
using testing::NaiveOptions;
using Case = testing::ExpressionCase;

// B = 2, S_q = 37, S_kv = 53 (so q runs over [16, 53)), D_qk = 40, D_v = 24, GQA 6/3.
Problem OddProblem() { return testing::OddGqaProblem(); }

struct CpuRun {
  Problem problem;
  std::unique_ptr<Workload> workload;
  FloatTensor output;
};

CpuRun RunCpu(const Problem& raw) {
  CpuRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  IterationOptions no_flush;
  no_flush.flush_cache = false;
  EXPECT_TRUE(r.workload->BeforeIteration(no_flush).ok());
  EXPECT_TRUE(r.workload->RunTimed().ok());
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  return r;
}

std::vector<Case> Cases() {
  std::vector<Case> c = testing::CommonExpressionCases();
  {
    // Per-head and per-batch masks: tile plans must not reuse one (b, h)'s answer for another.
    Case k{"head_and_batch_mask",
           [](Problem& p) { p.mask_mod = "(h % 2 == 0 || kv <= q) && kv < S_kv - 7 * b"; },
           {}};
    k.naive.mask_mod = [](int64_t b, int h, int64_t q, int64_t kv) {
      return (h % 2 == 0 || kv <= q) && kv < 53 - 7 * b;
    };
    c.push_back(k);
  }
  {
    // hq and hkv of GQA 6/3: output head h reads query head h and KV head h / 2.
    Case k{"head_map_variables", [](Problem& p) { p.score_mod = "s + 0.1 * hkv - 0.05 * hq"; }, {}};
    k.naive.score_mod = [](double s, int64_t, int h, int64_t, int64_t) {
      return s + 0.1f * (h / 2) - 0.05f * h;
    };
    c.push_back(k);
  }
  {
    // On top of every built-in modifier, with C's integer arithmetic and promotion.
    Case k{"after_builtins",
           [](Problem& p) {
             AllBuiltins(p);
             p.score_mod = "s * 0.5 + (q - kv) % 3 / 2";  // int % and / before the float add
           },
           {}};
    k.naive.score_mod = [](double s, int64_t, int, int64_t q, int64_t kv) {
      return s * 0.5 + static_cast<double>((q - kv) % 3 / 2);
    };
    c.push_back(k);
  }
  {
    Case k{"both_bf16_window",
           [](Problem& p) {
             p.dtype = DType::kBFloat16;
             p.mask.kind = MaskKind::kSlidingWindow;
             p.mask.left_tokens = 20;
             p.mask.right_tokens = 3;
             p.mask_mod = "kv % 5 != 0";
             p.score_mod = "q >= kv ? s : s - 1.5";
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t, int64_t kv) { return kv % 5 != 0; };
    k.naive.score_mod = [](double s, int64_t, int, int64_t q, int64_t kv) {
      return q >= kv ? s : s - 1.5;
    };
    c.push_back(k);
  }
  {
    Case k{"decode_paged",
           [](Problem& p) {
             p.phase = Phase::kDecode;
             p.seq_len_q = 1;
             p.kv_cache.paged = true;
             p.kv_cache.page_size_tokens = 16;
             p.score_mod = "s - 0.02 * (q - kv)";
             p.mask_mod = "doc[q] == doc[kv]";
             p.aux = {Aux("doc", {53}, DocIds())};
           },
           {}};
    k.naive.score_mod = [](double s, int64_t, int, int64_t q, int64_t kv) {
      return s - 0.02f * static_cast<double>(q - kv);
    };
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return DocOf(q) == DocOf(kv); };
    c.push_back(k);
  }
  return c;
}

class CpuExpressionsTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuExpressionsTest, MatchesTheNaiveAttentionAndTheOracle) {
  Problem p = OddProblem();
  GetParam().edit(p);
  CpuRun r = RunCpu(p);
  ASSERT_NE(r.workload, nullptr);
  const std::vector<double> expected =
      testing::NaiveAttention(r.problem, r.workload->Inputs(), GetParam().naive);
  testing::ExpectAllClose(r.output.values, expected, r.output.shape,
                          testing::StoredOutputTolerance(r.problem.dtype), GetParam().name);
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report =
      CheckOutput(r.problem, r.workload->Inputs(), r.output, full);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << "relative error " << report->relative_error;
  // A mask_mod that hides keys must change the output, or the naive side could be ignoring it.
  Problem plain = p;
  plain.score_mod.reset();
  plain.mask_mod.reset();
  plain.aux.clear();
  CpuRun without = RunCpu(plain);
  EXPECT_NE(without.output.values, r.output.values);
}

INSTANTIATE_TEST_SUITE_P(Expressions, CpuExpressionsTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// An expression equal to a built-in gives the built-in's output within float32 rounding (the
// built-ins compute their bias in double; the interpreter in float).
TEST(CpuExpressionsTest, ExpressionsEqualToBuiltinsGiveTheBuiltinOutput) {
  struct Pair {
    const char* name;
    std::function<void(Problem&)> builtin, expression;
  };
  const std::vector<Pair> pairs = {
      {"softcap",
       [](Problem& p) {
         p.softcap = {true, 3.0};
       },
       [](Problem& p) { p.score_mod = "3 * tanh(s / 3)"; }},
      {"alibi_harmonic",
       [](Problem& p) {
         p.alibi = {true, AlibiSchedule::kHarmonic, 0.75};
       },
       [](Problem& p) { p.score_mod = "s + 0.75 / (h + 1) * (kv - q)"; }},
      {"causal", [](Problem& p) { p.mask.kind = MaskKind::kCausal; },
       [](Problem& p) { p.mask_mod = "kv <= q"; }},
      {"window",
       [](Problem& p) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = 11;
         p.mask.right_tokens = 2;
       },
       [](Problem& p) { p.mask_mod = "q - kv <= 11 && kv - q <= 2"; }},
  };
  for (const Pair& pair : pairs) {
    Problem a = OddProblem(), b = OddProblem();
    pair.builtin(a);
    pair.expression(b);
    CpuRun ra = RunCpu(a), rb = RunCpu(b);
    ASSERT_EQ(ra.output.values.size(), rb.output.values.size()) << pair.name;
    std::vector<double> expected(ra.output.values.begin(), ra.output.values.end());
    testing::ExpectAllClose(rb.output.values, expected, rb.output.shape,
                            testing::StoredOutputTolerance(DType::kFloat32), pair.name);
  }
}

GradientTensors Gradients(const CpuRun& r) {
  absl::StatusOr<GradientTensors> g = r.workload->Gradients();
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : GradientTensors{};
}

// A mask_mod only selects pairs: the same pairs as the built-in give the same gradients, to the
// last bit (the same float32 arithmetic per pair).
TEST(CpuExpressionsTest, BackwardMaskModEqualsTheBuiltinMask) {
  Problem with_mod = OddProblem();
  with_mod.phase = Phase::kBackward;
  with_mod.mask_mod = "kv <= q";
  Problem with_causal = OddProblem();
  with_causal.phase = Phase::kBackward;
  with_causal.mask.kind = MaskKind::kCausal;
  CpuRun a = RunCpu(with_mod), b = RunCpu(with_causal);
  ASSERT_NE(a.workload, nullptr);
  ASSERT_NE(b.workload, nullptr);
  const GradientTensors ga = Gradients(a), gb = Gradients(b);
  EXPECT_FALSE(ga.dq.values.empty());
  EXPECT_EQ(ga.dq.values, gb.dq.values);
  EXPECT_EQ(ga.dk.values, gb.dk.values);
  EXPECT_EQ(ga.dv.values, gb.dv.values);
}

// The backward through a score_mod (its derivative in s by forward-mode rules, evaluate.h): the
// CPU's float32 gradients against the float64 oracle's, every element.
TEST(CpuExpressionsTest, BackwardThroughScoreModsMatchesTheOracle) {
  const std::vector<std::pair<const char*, std::function<void(Problem&)>>> cases = {
      {"bias_table_and_documents",
       [](Problem& p) {
         p.score_mod = "s + bias[h, min(max(q - kv, 0), 15)]";
         p.mask_mod = "doc[q] == doc[kv]";
         p.aux = {Aux("bias", {6, 16}, BiasTable()), Aux("doc", {53}, DocIds())};
         p.mask.kind = MaskKind::kCausal;
       }},
      {"smooth_functions",
       [](Problem& p) {
         p.score_mod = "s * sigmoid(s) + 0.3 * log(1 + exp(s)) - sqrt(s * s + 1)";
       }},
      {"branches_and_min_max",
       [](Problem& p) { p.score_mod = "s > 0 ? min(s, 1.5) : max(0.25 * s, -1) + abs(s - 0.1)"; }},
      {"after_builtins_bf16",
       [](Problem& p) {
         p.dtype = DType::kBFloat16;
         AllBuiltins(p);
         p.score_mod = "s / (1 + 0.01 * (q - kv)) + exp2(-s * s)";
       }},
  };
  for (const auto& [name, edit] : cases) {
    Problem p = OddProblem();
    p.phase = Phase::kBackward;
    edit(p);
    CpuRun r = RunCpu(p);
    ASSERT_NE(r.workload, nullptr) << name;
    const GradientTensors g = Gradients(r);
    const testing::OracleGradients ref =
        testing::FullOracleGradients(r.problem, r.workload->Inputs());
    const testing::Tolerance tol = testing::StoredOutputTolerance(r.problem.dtype, 1e-4);
    testing::ExpectAllClose(g.dq.values, ref.dq, g.dq.shape, tol, std::string(name) + " dQ");
    testing::ExpectAllClose(g.dk.values, ref.dk, g.dk.shape, tol, std::string(name) + " dK");
    testing::ExpectAllClose(g.dv.values, ref.dv, g.dv.shape, tol, std::string(name) + " dV");
  }
}

// Derivatives written independently: a score_mod equal to softcap or to harmonic ALiBi gives the
// built-in's gradients (which use softcap's closed-form derivative).
TEST(CpuExpressionsTest, BackwardScoreModsEqualToBuiltinsGiveTheBuiltinGradients) {
  struct Pair {
    const char* name;
    std::function<void(Problem&)> builtin, expression;
  };
  const std::vector<Pair> pairs = {
      {"softcap",
       [](Problem& p) {
         p.softcap = {true, 2.0};
       },
       [](Problem& p) { p.score_mod = "2 * tanh(s / 2)"; }},
      {"alibi_harmonic",
       [](Problem& p) {
         p.alibi = {true, AlibiSchedule::kHarmonic, 0.75};
       },
       [](Problem& p) { p.score_mod = "s + 0.75 / (h + 1) * (kv - q)"; }},
  };
  for (const Pair& pair : pairs) {
    Problem a = OddProblem(), b = OddProblem();
    a.phase = b.phase = Phase::kBackward;
    a.mask.kind = b.mask.kind = MaskKind::kCausal;
    pair.builtin(a);
    pair.expression(b);
    CpuRun ra = RunCpu(a), rb = RunCpu(b);
    ASSERT_NE(ra.workload, nullptr);
    ASSERT_NE(rb.workload, nullptr);
    const GradientTensors ga = Gradients(ra), gb = Gradients(rb);
    const testing::Tolerance tol = testing::StoredOutputTolerance(DType::kFloat32, 1e-4);
    const auto as_double = [](const FloatTensor& t) {
      return std::vector<double>(t.values.begin(), t.values.end());
    };
    testing::ExpectAllClose(gb.dq.values, as_double(ga.dq), gb.dq.shape, tol, pair.name);
    testing::ExpectAllClose(gb.dk.values, as_double(ga.dk), gb.dk.shape, tol, pair.name);
    testing::ExpectAllClose(gb.dv.values, as_double(ga.dv), gb.dv.shape, tol, pair.name);
  }
}

TEST(CpuExpressionsTest, CapabilitiesListTheExpressions) {
  const BackendSupport s = MakeCpuReferenceBackend(1)->Support();
  EXPECT_NE(std::find(s.modifiers.begin(), s.modifiers.end(), Modifier::kScoreMod),
            s.modifiers.end());
  EXPECT_NE(std::find(s.modifiers.begin(), s.modifiers.end(), Modifier::kMaskMod),
            s.modifiers.end());
}

}  // namespace
}  // namespace attnbench
