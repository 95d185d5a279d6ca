// cuda_reference's PHASE_BACKWARD on a device against the float64 backward oracle (backward64.h,
// itself checked against finite differences): every element of dQ, dK and dV under a bound
// scaled to the dtype and to its row, on fresh generated inputs with odd sizes (S_q = 37 !=
// S_kv = 53, D_qk = 40 != D_v = 24, GQA 6/2, and 150 x 170 so that several 128-row chunks run):
// every layout, mask and modifier, float32, bfloat16 and float16, the backward timed alone and
// as a training step. The gradients start as NaN on the device, so every element must have been
// written. Then the server's check (CheckGradients) must pass, and the workload's contract holds:
// shapes and dtypes as cpu_reference returns them, the same bits in both timing modes, over
// runs and under CUDA-graph replay, refusals by cuda_flash and cuda_unfused, and the memory
// estimate with its RESOURCE_EXHAUSTED before anything is allocated. Skips (GTEST_SKIP) on a
// machine without a CUDA device.
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/device_backward.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/backward_cases.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::ExpectAllClose;
using testing::FullOracleGradients;
using testing::OracleGradients;

const std::vector<std::unique_ptr<Backend>>& Backends() {
  static const auto* const backends = new std::vector<std::unique_ptr<Backend>>(MakeCudaBackends());
  return *backends;
}

Backend* Find(const std::string& name) {
  for (const auto& b : Backends()) {
    if (b->Name() == name) return b.get();
  }
  return nullptr;
}

#define SKIP_WITHOUT_DEVICE() \
  if (Backends().empty()) GTEST_SKIP() << "no CUDA device on this machine"

// B = 2, S_q = 37, S_kv = 53, D_qk = 40, D_v = 24, GQA 6/2 (three query heads per kv head),
// float32, PHASE_BACKWARD; not normalized.
Problem OddProblem() {
  Problem p = testing::OddGqaProblem();
  p.layout.num_kv_heads = 2;
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

// Prepares on cuda_reference and runs `runs` iterations with `options`.
BackwardRun RunBackward(const Problem& raw, const IterationOptions& options = IterationOptions{},
                        int runs = 1) {
  BackwardRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  Backend* backend = Find(kCudaReferenceBackend);
  EXPECT_NE(backend, nullptr);
  if (backend == nullptr) return r;
  const absl::Status supported = backend->CheckSupported(r.problem);
  EXPECT_TRUE(supported.ok()) << supported;
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  for (int i = 0; i < runs; ++i) {
    EXPECT_TRUE(r.workload->BeforeIteration(options).ok());
    absl::StatusOr<double> seconds = r.workload->RunTimed();
    EXPECT_TRUE(seconds.ok() && *seconds > 0) << seconds.status();
  }
  absl::StatusOr<GradientTensors> g = r.workload->Gradients();
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) r.gradients = *std::move(g);
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  return r;
}

// Every element of dQ, dK, dV against the oracle. cuda_reference computes what cpu_reference does
// (float32 math on the stored inputs, each gradient a float32 sum rounded once to the dtype), so
// it is held to the CPU backward's bound (cpu_backward_test.cc): one ulp of the dtype relative,
// plus 1e-4 of the element's row, the float32 noise of sums whose terms cancel (a dS row sums to
// zero). Then the check the server runs after a backward (kernels/reference/gradient_check.h)
// must pass on every row.
void ExpectGradientsClose(const BackwardRun& r, const std::string& context) {
  ASSERT_NE(r.workload, nullptr) << context;
  const OracleGradients ref = FullOracleGradients(r.problem, r.workload->Inputs());
  const testing::Tolerance tol = testing::StoredOutputTolerance(r.problem.dtype, 1e-4);
  ExpectAllClose(r.gradients.dq.values, ref.dq, r.gradients.dq.shape, tol, context + " dQ");
  ExpectAllClose(r.gradients.dk.values, ref.dk, r.gradients.dk.shape, tol, context + " dK");
  ExpectAllClose(r.gradients.dv.values, ref.dv, r.gradients.dv.shape, tol, context + " dV");
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report =
      CheckGradients(r.problem, r.workload->Inputs(), r.gradients, full);
  ASSERT_TRUE(report.ok()) << context << ": " << report.status();
  EXPECT_TRUE(report->passed) << context << ": oracle relative error " << report->relative_error;
  EXPECT_EQ(report->rows_checked, report->rows_total) << context;
}

using Case = testing::BackwardCase;

std::vector<Case> Cases() {
  std::vector<Case> c = testing::BackwardVariantCases();
  // A head dim wider than a warp's 32 lanes several times over, D_qk != D_v.
  c.push_back({"d128_dv64_causal", [](Problem& p) {
                 p.batch_size = 1;
                 p.head_dim_qk = 128;
                 p.head_dim_v = 64;
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  return c;
}

const std::vector<Case>& AllCases() {
  static const auto* const cases = new std::vector<Case>(Cases());
  return *cases;
}

class CudaReferenceBackwardTest : public ::testing::TestWithParam<std::tuple<int, DType, bool>> {};

TEST_P(CudaReferenceBackwardTest, EveryGradientElementMatchesTheFloat64Oracle) {
  SKIP_WITHOUT_DEVICE();
  const auto& [index, dtype, training_step] = GetParam();
  const Case& c = AllCases()[index];
  Problem p = OddProblem();
  c.edit(p);
  p.dtype = dtype;
  p.training_step = training_step;
  p.seed = 0x5eed0000u + 97u * static_cast<uint64_t>(index) + static_cast<uint64_t>(dtype);
  const BackwardRun r = RunBackward(p);
  ASSERT_NE(r.workload, nullptr);
  const std::string context = absl::StrCat(c.name, "/", DTypeName(dtype),
                                           training_step ? "/training_step" : "/backward_only");
  // The shapes and dtype cpu_reference returns: those of Q, K, V, values stored in the dtype.
  EXPECT_EQ(r.gradients.dq.shape, r.workload->Inputs().query.shape) << context;
  EXPECT_EQ(r.gradients.dk.shape, r.workload->Inputs().key.shape) << context;
  EXPECT_EQ(r.gradients.dv.shape, r.workload->Inputs().value.shape) << context;
  for (const FloatTensor* t : {&r.gradients.dq, &r.gradients.dk, &r.gradients.dv}) {
    EXPECT_EQ(t->dtype, r.problem.dtype) << context;
    for (float v : t->values) {
      if (!std::isfinite(v)) continue;  // counted as failures by the comparison below
      ASSERT_EQ(RoundToDType(v, r.problem.dtype), v) << context;
    }
  }
  ExpectGradientsClose(r, context);
  // The output is the forward's, under the GPU forward kernels' bound (cuda_backends_test.cc).
  const std::vector<double> o = testing::NaiveAttention(r.problem, r.workload->Inputs());
  ExpectAllClose(r.output.values, o, r.output.shape,
                 testing::TensorCoreKernelTolerance(r.problem.dtype), context + " O");
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CudaReferenceBackwardTest,
    ::testing::Combine(::testing::Range(0, static_cast<int>(AllCases().size())),
                       ::testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16),
                       ::testing::Bool()),
    [](const auto& info) {
      return absl::StrCat(AllCases()[std::get<0>(info.param)].name, "_",
                          DTypeName(std::get<1>(info.param)), "_",
                          std::get<2>(info.param) ? "training_step" : "backward_only");
    });

// No atomics: the same gradients bit for bit over iterations, in both timing modes, under
// CUDA-graph replay, and with the input copies rotated (warm cache).
TEST(CudaReferenceBackwardTest, DeterministicOverRunsModesAndGraphReplay) {
  SKIP_WITHOUT_DEVICE();
  for (DType d : {DType::kFloat32, DType::kBFloat16}) {
    Problem p = OddProblem();
    testing::SetAllModifiers(p);
    p.dtype = d;
    const BackwardRun once = RunBackward(p);
    const BackwardRun rotated = RunBackward(p, NoFlush(), 5);
    IterationOptions graph;
    graph.use_cuda_graph = true;
    const BackwardRun replayed = RunBackward(p, graph, 3);
    p.training_step = true;
    const BackwardRun step = RunBackward(p);
    const BackwardRun step_replayed = RunBackward(p, graph, 3);
    ASSERT_NE(once.workload, nullptr);
    ExpectGradientsClose(once, DTypeName(d));
    for (const BackwardRun* other : {&rotated, &replayed, &step, &step_replayed}) {
      ASSERT_NE(other->workload, nullptr);
      EXPECT_EQ(other->gradients.dq.values, once.gradients.dq.values) << DTypeName(d);
      EXPECT_EQ(other->gradients.dk.values, once.gradients.dk.values) << DTypeName(d);
      EXPECT_EQ(other->gradients.dv.values, once.gradients.dv.values) << DTypeName(d);
      EXPECT_EQ(other->output.values, once.output.values) << DTypeName(d);
    }
  }
}

// Several hundred rows each way with D = 128, where the query and key passes each run several
// chunks per row and grid-stride over many blocks.
TEST(CudaReferenceBackwardTest, LongerCausalGqaMatchesTheOracle) {
  SKIP_WITHOUT_DEVICE();
  Problem p = OddProblem();
  p.batch_size = 1;
  p.seq_len_q = 300;
  p.seq_len_kv = 433;
  p.head_dim_qk = 128;
  p.head_dim_v = 128;
  p.layout.num_query_heads = 8;
  p.layout.num_kv_heads = 2;
  p.mask.kind = MaskKind::kCausal;
  p.rope.enabled = true;
  p.dtype = DType::kBFloat16;
  p.seed = 4242;
  ExpectGradientsClose(RunBackward(p), "S_q 300, S_kv 433, D 128, GQA 8/2, causal RoPE");
}

TEST(CudaReferenceBackwardTest, GradientsOnlyAfterARunAndOnlyForABackward) {
  SKIP_WITHOUT_DEVICE();
  Backend* backend = Find(kCudaReferenceBackend);
  ASSERT_NE(backend, nullptr);
  const Problem p = NormalizeProblem(OddProblem());
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->Output().status().code(), absl::StatusCode::kFailedPrecondition);
  // RunTimed without BeforeIteration still runs the forward first, untimed.
  ASSERT_TRUE((*w)->RunTimed().ok());
  absl::StatusOr<GradientTensors> g = (*w)->Gradients();
  ASSERT_TRUE(g.ok()) << g.status();
  const OracleGradients ref = FullOracleGradients(p, (*w)->Inputs());
  const testing::Tolerance tol = testing::StoredOutputTolerance(p.dtype, 1e-4);
  ExpectAllClose(g->dq.values, ref.dq, g->dq.shape, tol, "without BeforeIteration dQ");
  ExpectAllClose(g->dk.values, ref.dk, g->dk.shape, tol, "without BeforeIteration dK");
  ExpectAllClose(g->dv.values, ref.dv, g->dv.shape, tol, "without BeforeIteration dV");
  // A forward workload computes no gradients.
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  absl::StatusOr<std::unique_ptr<Workload>> f = backend->Prepare(prefill, 0);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE((*f)->RunTimed().ok());
  EXPECT_EQ((*f)->Gradients().status().code(), absl::StatusCode::kUnimplemented);
}

TEST(CudaReferenceBackwardTest, FlashAndUnfusedRefuseNamingThePhase) {
  SKIP_WITHOUT_DEVICE();
  const Problem p = NormalizeProblem(OddProblem());
  for (const char* name : {kCudaFlashBackend, kCudaUnfusedBackend}) {
    Backend* backend = Find(name);
    ASSERT_NE(backend, nullptr) << name;
    const absl::Status s = backend->CheckSupported(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << name << ": " << s;
    EXPECT_NE(s.message().find("spec.phase=PHASE_BACKWARD"), std::string::npos) << s;
    EXPECT_EQ(backend->Prepare(p, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// The estimate a server compares with --max_request_bytes covers the forward's buffers and the
// backward's (DeviceBackward); a problem over the device's memory is RESOURCE_EXHAUSTED at once,
// before its inputs are generated on the host or anything is allocated.
TEST(CudaReferenceBackwardTest, EstimateCoversTheBackwardAndTooLargeIsRefusedFirst) {
  SKIP_WITHOUT_DEVICE();
  Backend* backend = Find(kCudaReferenceBackend);
  ASSERT_NE(backend, nullptr);
  const Problem p = NormalizeProblem(OddProblem());
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  const ProblemShapes shapes = *ShapesOf(p);
  EXPECT_EQ(backend->EstimateBytes(p),
            backend->EstimateBytes(prefill) + cuda::DeviceBackward::EstimateBytes(p, shapes));

  Problem huge = OddProblem();
  huge.batch_size = 64;
  huge.seq_len_q = huge.seq_len_kv = int64_t{1} << 20;
  huge.head_dim_qk = 128;
  huge.head_dim_v = 128;
  huge.layout.num_query_heads = 16;
  huge.layout.num_kv_heads = 16;
  huge.dtype = DType::kBFloat16;
  huge = NormalizeProblem(huge);
  ASSERT_TRUE(ValidateProblem(huge).ok()) << ValidateProblem(huge);
  EXPECT_GT(backend->EstimateBytes(huge), backend->Devices().front().memory_bytes);
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(huge, 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kResourceExhausted) << w.status();
  // The device is still usable.
  ExpectGradientsClose(RunBackward(OddProblem()), "after the refusal");
}

}  // namespace
}  // namespace attnbench
