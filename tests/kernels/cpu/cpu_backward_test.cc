// cpu_reference's PHASE_BACKWARD against the float64 backward oracle (itself checked against
// finite differences in backward64_test.cc), every element of dQ, dK and dV, on odd sizes
// (S_q != S_kv, D_qk != D_v, several key and query blocks, non-power-of-two heads): every layout,
// mask, modifier and dtype. Plus the workload's contract: a client's dO, determinism over runs
// and thread counts, training step against backward only, the memory estimate against what is
// really allocated, refusals, and stopping midway.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "tests/kernels/backward_cases.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::AsBackward;
using testing::ExpectAllClose;
using testing::FullOracleGradients;
using testing::OracleGradients;

Problem OddProblem() {
  Problem p = testing::OddGqaProblem();
  p.phase = Phase::kBackward;
  return p;
}

IterationOptions NoFlush() {
  IterationOptions o;
  o.flush_cache = false;
  return o;
}

struct BackwardRun {
  Problem problem;
  std::unique_ptr<Workload> workload;
  GradientTensors gradients;
  FloatTensor output;
};

BackwardRun RunBackward(const Problem& raw, int threads = 2) {
  BackwardRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(threads);
  const absl::Status supported = backend->CheckSupported(r.problem);
  EXPECT_TRUE(supported.ok()) << supported;
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  EXPECT_TRUE(r.workload->BeforeIteration(NoFlush()).ok());
  absl::StatusOr<double> seconds = r.workload->RunTimed();
  EXPECT_TRUE(seconds.ok() && *seconds > 0) << seconds.status();
  absl::StatusOr<GradientTensors> g = r.workload->Gradients();
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) r.gradients = *std::move(g);
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  return r;
}

// Every element of dQ, dK, dV against the oracle. Each is a float32 sum rounded once to the
// dtype: one ulp of the dtype relative, plus float32 noise relative to the element's row. A dS
// row sums to zero, so a gradient row can be much smaller than the terms it sums (a query row
// keeping two or three keys); the worst element of these cases sits at 2.0e-5 of its row's
// largest |value| (causal_more_queries_than_keys, dQ), so the noise allowance is 1e-4.
void ExpectGradientsClose(const BackwardRun& r, const std::string& context) {
  const OracleGradients ref = FullOracleGradients(r.problem, r.workload->Inputs());
  const testing::Tolerance tol = testing::StoredOutputTolerance(r.problem.dtype, 1e-4);
  ExpectAllClose(r.gradients.dq.values, ref.dq, r.gradients.dq.shape, tol, context + " dQ");
  ExpectAllClose(r.gradients.dk.values, ref.dk, r.gradients.dk.shape, tol, context + " dK");
  ExpectAllClose(r.gradients.dv.values, ref.dv, r.gradients.dv.shape, tol, context + " dV");
}

using Case = testing::BackwardCase;

std::vector<Case> Cases() {
  std::vector<Case> c = testing::BackwardVariantCases();
  // Dtypes: inputs and gradients stored, float32 math.
  for (DType d : {DType::kFloat16, DType::kBFloat16}) {
    const std::string name = DTypeName(d);
    c.push_back({name, [d](Problem& p) { p.dtype = d; }});
    c.push_back({name + "_all_modifiers", [d](Problem& p) {
                   p.dtype = d;
                   testing::SetAllModifiers(p);
                 }});
    c.push_back({name + "_explicit_probabilistic", [d](Problem& p) {
                   p.dtype = d;
                   testing::SetLayout(p, LayoutKind::kExplicit);
                   p.layout.num_query_heads = 2;
                   p.layout.num_kv_heads = 2;
                   p.layout.pairs = {{1, 0}, {0, 1}, {1, 1}};
                   p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                   p.mask.query_block_tokens = 3;
                   p.mask.kv_block_tokens = 5;
                   p.mask.c_coefficient = 0.9;
                   p.mask.alpha = 1.5;
                   p.softcap = {true, 4.0};
                 }});
  }
  // The long cases stored in 16 bits.
  c.push_back({"long_block_sparse_bf16", [](Problem& p) {
                 testing::SetLong(p);
                 p.dtype = DType::kBFloat16;
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 64;
                 p.mask.kv_block_tokens = 64;
                 p.mask.blocks = {{0, 0}, {1, 2}, {2, 1}, {2, 2}};
               }});
  c.push_back({"long_all_modifiers_fp16", [](Problem& p) {
                 testing::SetLong(p);
                 p.dtype = DType::kFloat16;
                 testing::SetAllModifiers(p);
                 p.alibi.schedule = AlibiSchedule::kHarmonic;
               }});
  return c;
}

class CpuBackwardVsOracleTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBackwardVsOracleTest, EveryGradientElementMatches) {
  Problem p = OddProblem();
  GetParam().edit(p);
  const BackwardRun r = RunBackward(p);
  ASSERT_NE(r.workload, nullptr);
  EXPECT_EQ(r.gradients.dq.shape, r.workload->Inputs().query.shape);
  EXPECT_EQ(r.gradients.dk.shape, r.workload->Inputs().key.shape);
  EXPECT_EQ(r.gradients.dv.shape, r.workload->Inputs().value.shape);
  for (const FloatTensor* t : {&r.gradients.dq, &r.gradients.dk, &r.gradients.dv}) {
    EXPECT_EQ(t->dtype, r.problem.dtype);
    for (float v : t->values) ASSERT_EQ(RoundToDType(v, r.problem.dtype), v);
  }
  ExpectGradientsClose(r, GetParam().name);
  // The output is the forward's, as the forward workload computes it.
  const std::vector<double> o = testing::NaiveAttention(r.problem, r.workload->Inputs());
  ExpectAllClose(r.output.values, o, r.output.shape,
                 testing::StoredOutputTolerance(r.problem.dtype), GetParam().name + " O");
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuBackwardVsOracleTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(CpuBackwardTest, UsesTheClientsGradOutput) {
  Problem p = OddProblem();
  p.mask.kind = MaskKind::kCausal;
  p.rope.enabled = true;
  const BackwardRun generated = RunBackward(p);
  ASSERT_NE(generated.workload, nullptr);
  // The generated dO sent back as the client's: the same gradients, bit for bit.
  Problem client = p;
  client.grad_output = testing::ToHost(generated.workload->Inputs().grad_output);
  const BackwardRun same = RunBackward(client);
  ASSERT_NE(same.workload, nullptr);
  EXPECT_EQ(same.workload->Inputs().grad_output.values,
            generated.workload->Inputs().grad_output.values);
  EXPECT_EQ(same.gradients.dq.values, generated.gradients.dq.values);
  EXPECT_EQ(same.gradients.dk.values, generated.gradients.dk.values);
  EXPECT_EQ(same.gradients.dv.values, generated.gradients.dv.values);
  // Twice that dO: the gradients are linear in dO, and doubling is exact in float32.
  FloatTensor doubled = generated.workload->Inputs().grad_output;
  for (float& v : doubled.values) v *= 2;
  client.grad_output = testing::ToHost(doubled);
  const BackwardRun twice = RunBackward(client);
  ASSERT_NE(twice.workload, nullptr);
  auto times_two = [](std::vector<float> v) {
    for (float& x : v) x *= 2;
    return v;
  };
  EXPECT_EQ(twice.gradients.dq.values, times_two(generated.gradients.dq.values));
  EXPECT_EQ(twice.gradients.dk.values, times_two(generated.gradients.dk.values));
  EXPECT_EQ(twice.gradients.dv.values, times_two(generated.gradients.dv.values));
  // And the client's dO with client Q, K, V, in bfloat16, matches the oracle.
  Problem all_client = OddProblem();
  all_client.dtype = DType::kBFloat16;
  all_client = NormalizeProblem(all_client);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(all_client);
  ASSERT_TRUE(in.ok());
  for (float& v : in->grad_output.values) v = RoundToDType(-0.5f * v, DType::kBFloat16);
  all_client.query = testing::ToHost(in->query);
  all_client.key = testing::ToHost(in->key);
  all_client.value = testing::ToHost(in->value);
  all_client.grad_output = testing::ToHost(in->grad_output);
  all_client.seed = 1;  // nothing is generated from it
  const BackwardRun given = RunBackward(all_client);
  ASSERT_NE(given.workload, nullptr);
  EXPECT_EQ(given.workload->Inputs().grad_output.values, in->grad_output.values);
  ExpectGradientsClose(given, "all client tensors");
}

TEST(CpuBackwardTest, DeterministicOverRunsAndThreadCounts) {
  Problem p = OddProblem();
  testing::SetAllModifiers(p);
  testing::SetLong(p);
  testing::SetLayout(p, LayoutKind::kGqkva);
  p.layout.query_groups = 2;
  p.layout.kv_groups = 3;
  const BackwardRun one = RunBackward(p, 1);
  const BackwardRun three = RunBackward(p, 3);
  ASSERT_NE(one.workload, nullptr);
  ASSERT_NE(three.workload, nullptr);
  EXPECT_EQ(one.gradients.dq.values, three.gradients.dq.values);
  EXPECT_EQ(one.gradients.dk.values, three.gradients.dk.values);
  EXPECT_EQ(one.gradients.dv.values, three.gradients.dv.values);
  EXPECT_EQ(one.output.values, three.output.values);
  // Another iteration of the same workload: the same gradients again.
  ASSERT_TRUE(three.workload->BeforeIteration(NoFlush()).ok());
  ASSERT_TRUE(three.workload->RunTimed().ok());
  const absl::StatusOr<GradientTensors> again = three.workload->Gradients();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->dq.values, one.gradients.dq.values);
  EXPECT_EQ(again->dk.values, one.gradients.dk.values);
  EXPECT_EQ(again->dv.values, one.gradients.dv.values);
}

TEST(CpuBackwardTest, TrainingStepGivesTheBackwardOnlyGradients) {
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    Problem p = OddProblem();
    testing::SetAllModifiers(p);
    p.dtype = d;
    const BackwardRun backward_only = RunBackward(p);
    p.training_step = true;
    const BackwardRun step = RunBackward(p);
    ASSERT_NE(backward_only.workload, nullptr);
    ASSERT_NE(step.workload, nullptr);
    EXPECT_EQ(step.gradients.dq.values, backward_only.gradients.dq.values) << DTypeName(d);
    EXPECT_EQ(step.gradients.dk.values, backward_only.gradients.dk.values) << DTypeName(d);
    EXPECT_EQ(step.gradients.dv.values, backward_only.gradients.dv.values) << DTypeName(d);
    EXPECT_EQ(step.output.values, backward_only.output.values) << DTypeName(d);
  }
}

TEST(CpuBackwardTest, GradientsAndOutputOnlyAfterARun) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  const Problem p = NormalizeProblem(OddProblem());
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->Output().status().code(), absl::StatusCode::kFailedPrecondition);
  // RunTimed without BeforeIteration still runs the forward first.
  ASSERT_TRUE((*w)->RunTimed().ok());
  EXPECT_TRUE((*w)->Gradients().ok());
  // A forward workload computes no gradients.
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  absl::StatusOr<std::unique_ptr<Workload>> f = backend->Prepare(prefill, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->RunTimed().ok());
  EXPECT_EQ((*f)->Gradients().status().code(), absl::StatusCode::kUnimplemented);
}

// Bytes malloc holds now (small blocks and mmapped ones).
uint64_t HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

TEST(CpuBackwardTest, EstimateCoversWhatTheWorkloadAllocates) {
  Problem raw = OddProblem();
  raw.seq_len_q = raw.seq_len_kv = 700;
  raw.head_dim_qk = 64;
  raw.head_dim_v = 64;
  raw.layout.num_query_heads = 8;
  raw.layout.num_kv_heads = 2;
  raw.rope.enabled = true;
  raw.mask.kind = MaskKind::kCausal;
  const Problem p = NormalizeProblem(raw);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  const uint64_t estimate = backend->EstimateBytes(p);  // measures the CPU once, untimed here
  // At least every tensor the backward holds in float32: Q, K, V, dO, the prepared Q and K, O, the
  // log-sum-exp, dQ, dK, dV.
  const uint64_t q = 2 * 700 * 8 * 64, kv = 2 * 700 * 2 * 64, rows = 2 * 8 * 700;
  EXPECT_GE(estimate, 4 * (q + 2 * kv + q + q + kv + q + rows + q + 2 * kv));
  const uint64_t before = HeapBytes();
  {
    absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->BeforeIteration(NoFlush()).ok());
    ASSERT_TRUE((*w)->RunTimed().ok());
    const absl::StatusOr<GradientTensors> g = (*w)->Gradients();
    const absl::StatusOr<FloatTensor> o = (*w)->Output();
    ASSERT_TRUE(g.ok() && o.ok());
    const uint64_t held = HeapBytes() - before;
    EXPECT_LE(held, estimate);
    EXPECT_GE(held, estimate / 2) << "the estimate is far above what is allocated";
  }
  // A forward of the same shape needs much less: no dO, gradients or log-sum-exp.
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  EXPECT_LT(backend->EstimateBytes(prefill) + 4 * (q + q + 2 * kv), estimate);
}

TEST(CpuBackwardTest, TooLargeForTheHostIsRefusedBeforeAllocating) {
  Problem p = OddProblem();
  p.batch_size = 64;
  p.seq_len_q = p.seq_len_kv = int64_t{1} << 20;
  p.head_dim_qk = 128;
  p.head_dim_v = 128;
  p.layout.num_query_heads = 16;
  p.layout.num_kv_heads = 16;
  p = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kResourceExhausted) << w.status();
  EXPECT_NE(w.status().message().find("bytes of host memory"), std::string::npos) << w.status();
}

// (PHASE_BACKWARD at layer scope: cpu_layer_backward_test.cc.)
TEST(CpuBackwardTest, Float8IsAForwardDtype) {
  // FP8 inputs are defined for the prefill forward only (§1b): a backward is refused as invalid
  // before any backend sees it, so no backend's allow-list needs a dtype list per phase.
  Problem fp8 = OddProblem();
  fp8.dtype = DType::kFloat8E4M3;
  fp8 = NormalizeProblem(fp8);
  const absl::Status s = ValidateProblem(fp8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "spec.dtype DTYPE_FLOAT8_E4M3 is defined for PHASE_PREFILL at SCOPE_CORE without "
            "spec.kv_compression (§1b)");
  fp8.phase = Phase::kPrefill;
  EXPECT_TRUE(ValidateProblem(fp8).ok());
  EXPECT_TRUE(MakeCpuReferenceBackend(1)->CheckSupported(fp8).ok());
}

TEST(CpuBackwardTest, StopsMidwayWhenAsked) {
  // Long enough that a full training step takes seconds on one core.
  Problem p = OddProblem();
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 3000;
  p.head_dim_qk = 64;
  p.head_dim_v = 64;
  p.training_step = true;
  p = NormalizeProblem(p);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  const auto start = std::chrono::steady_clock::now();
  const StopCheck stop(
      [&] { return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(50); },
      std::chrono::milliseconds(1));
  IterationOptions options = NoFlush();
  options.stop = &stop;
  ASSERT_TRUE((*w)->BeforeIteration(options).ok());
  const absl::StatusOr<double> timed = (*w)->RunTimed();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(timed.status().code(), absl::StatusCode::kCancelled) << timed.status();
  EXPECT_LT(took, 2.0);
  EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition);

  // Backward only: the untimed forward of the first BeforeIteration stops too, and is redone by
  // the next one.
  Problem backward_only = p;
  backward_only.training_step = false;
  backward_only.seq_len_q = backward_only.seq_len_kv = 200;
  absl::StatusOr<std::unique_ptr<Workload>> b = backend->Prepare(backward_only, 0);
  ASSERT_TRUE(b.ok());
  const StopCheck at_once([] { return true; });
  IterationOptions stopped = NoFlush();
  stopped.stop = &at_once;
  EXPECT_EQ((*b)->BeforeIteration(stopped).code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE((*b)->BeforeIteration(NoFlush()).ok());
  ASSERT_TRUE((*b)->RunTimed().ok());
  const BackwardRun fresh = RunBackward(backward_only);
  EXPECT_EQ((*b)->Gradients()->dq.values, fresh.gradients.dq.values);
}

}  // namespace
}  // namespace attnbench
