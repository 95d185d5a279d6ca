// The CUDA backends' PHASE_BACKWARD on a device against the float64 backward oracle
// (backward64.h, itself checked against finite differences): cuda_reference, cuda_unfused and
// cuda_flash (fp16 and bf16; its kernel through its launchers always, CudaFlashBackwardKernelTest,
// and through the backend where it declares the backward, CudaFlashBackwardTest), every element of
// dQ, dK and dV under a bound scaled to the dtype and to its row, on fresh generated inputs with
// odd sizes (S_q = 37 != S_kv = 53, D_qk = 40 != D_v = 24, GQA 6/2, and 150 x 170 so that several
// 128-row chunks run): every layout, mask and modifier, float32, bfloat16 and float16, the backward
// timed alone and as a training step. The gradients start as NaN on the device, so every element
// must have been written. Then the server's check (CheckGradients) must pass, and the workload's
// contract holds: shapes and dtypes as cpu_reference returns them, the same bits in both timing
// modes, over runs and under CUDA-graph replay, refusals by cuda_flash (and of expressions by
// cuda_unfused's backward), and the memory estimate with its RESOURCE_EXHAUSTED before anything is
// allocated. cuda_unfused's chunked paths (several (b, h) entries per chunk, query rows in pieces)
// run through UnfusedBackward directly with small budgets. Skips (GTEST_SKIP) on a machine without
// a CUDA device.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
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
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_backward.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/cuda/unfused/unfused_backward.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/reference/layer_backward64.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
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
Problem OddProblem() { return testing::GpuBackwardBaseProblem(); }

// The bound every gradient element must meet on `backend`. cuda_reference computes what
// cpu_reference does (float32 math on the stored inputs, each gradient a float32 sum rounded once
// to the dtype), so it is held to the CPU backward's bound (cpu_backward_test.cc): one ulp of the
// dtype relative, plus 1e-4 of the element's row, the float32 noise of sums whose terms cancel (a
// dS row sums to zero). cuda_unfused's GEMMs take P and dS rounded to the dtype, the tensor-core
// operands, so in 16-bit dtypes it has the tensor-core kernels' bound (test_util.h
// UnfusedBackwardTolerance, measured on these very cases and seeds by
// backward_closeness_test.cc); in float32 cuda_reference's.
testing::Tolerance GradientTolerance(const std::string& backend, DType dtype) {
  if (backend == kCudaUnfusedBackend) return testing::UnfusedBackwardTolerance(dtype);
  // cuda_flash: the tensor-core roundings too (FlashBackwardTolerance, measured the same way).
  if (backend == kCudaFlashBackend) return testing::FlashBackwardTolerance(dtype);
  return testing::StoredOutputTolerance(dtype, 1e-4);
}

IterationOptions NoFlush() {
  IterationOptions o;
  o.flush_cache = false;
  return o;
}

struct BackwardRun {
  std::string backend;
  Problem problem;
  std::unique_ptr<Workload> workload;
  GradientTensors gradients;
  FloatTensor output;
};

// Prepares on `backend_name` and runs `runs` iterations with `options`.
BackwardRun RunBackward(const std::string& backend_name, const Problem& raw,
                        const IterationOptions& options = IterationOptions{}, int runs = 1) {
  BackwardRun r;
  r.backend = backend_name;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  Backend* backend = Find(backend_name);
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

// dQ, dK, dV of a run on `inputs` against the oracle, every element under the backend's bound;
// then the check the server runs after a backward (kernels/reference/gradient_check.h) must pass
// on every row.
void ExpectGradientsMatchOracle(const std::string& backend, const Problem& problem,
                                const AttentionInputs& inputs, const GradientTensors& g,
                                const std::string& context) {
  const OracleGradients ref = FullOracleGradients(problem, inputs);
  const testing::Tolerance tol = GradientTolerance(backend, problem.dtype);
  ExpectAllClose(g.dq.values, ref.dq, g.dq.shape, tol, context + " dQ");
  ExpectAllClose(g.dk.values, ref.dk, g.dk.shape, tol, context + " dK");
  ExpectAllClose(g.dv.values, ref.dv, g.dv.shape, tol, context + " dV");
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report = CheckGradients(problem, inputs, g, full);
  ASSERT_TRUE(report.ok()) << context << ": " << report.status();
  EXPECT_TRUE(report->passed) << context << ": oracle relative error " << report->relative_error;
  EXPECT_EQ(report->rows_checked, report->rows_total) << context;
}

void ExpectGradientsClose(const BackwardRun& r, const std::string& context) {
  ASSERT_NE(r.workload, nullptr) << context;
  ExpectGradientsMatchOracle(r.backend, r.problem, r.workload->Inputs(), r.gradients,
                             r.backend + " " + context);
}

using Case = testing::BackwardCase;

const std::vector<Case>& AllCases() {
  static const auto* const cases = new std::vector<Case>(testing::GpuBackwardCases());
  return *cases;
}

// Case `index` in `dtype` and timing mode on `backend`: every gradient element against the
// oracle, the gradients' shapes and dtype, and the forward's output.
void CheckVariant(const std::string& backend, int index, DType dtype, bool training_step) {
  const Case& c = AllCases()[index];
  Problem p = testing::GpuBackwardCaseProblem(index, dtype);
  p.training_step = training_step;
  const BackwardRun r = RunBackward(backend, p);
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

using VariantParam = std::tuple<int, DType, bool>;
std::string VariantName(const ::testing::TestParamInfo<VariantParam>& info) {
  return absl::StrCat(AllCases()[std::get<0>(info.param)].name, "_",
                      DTypeName(std::get<1>(info.param)), "_",
                      std::get<2>(info.param) ? "training_step" : "backward_only");
}
const auto kVariants = ::testing::Combine(
    ::testing::Range(0, static_cast<int>(AllCases().size())),
    ::testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16), ::testing::Bool());

class CudaReferenceBackwardTest : public ::testing::TestWithParam<VariantParam> {};

TEST_P(CudaReferenceBackwardTest, EveryGradientElementMatchesTheFloat64Oracle) {
  SKIP_WITHOUT_DEVICE();
  const auto& [index, dtype, training_step] = GetParam();
  CheckVariant(kCudaReferenceBackend, index, dtype, training_step);
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaReferenceBackwardTest, kVariants, VariantName);

class CudaUnfusedBackwardTest : public ::testing::TestWithParam<VariantParam> {};

TEST_P(CudaUnfusedBackwardTest, EveryGradientElementMatchesTheFloat64Oracle) {
  SKIP_WITHOUT_DEVICE();
  const auto& [index, dtype, training_step] = GetParam();
  CheckVariant(kCudaUnfusedBackend, index, dtype, training_step);
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaUnfusedBackwardTest, kVariants, VariantName);

// No atomics: the same gradients bit for bit over iterations, in both timing modes, under
// CUDA-graph replay, and with the input copies rotated (warm cache).
void ExpectDeterministic(const std::string& backend) {
  for (DType d : {DType::kFloat32, DType::kBFloat16}) {
    Problem p = OddProblem();
    testing::SetAllModifiers(p);
    p.dtype = d;
    const BackwardRun once = RunBackward(backend, p);
    const BackwardRun rotated = RunBackward(backend, p, NoFlush(), 5);
    IterationOptions graph;
    graph.use_cuda_graph = true;
    const BackwardRun replayed = RunBackward(backend, p, graph, 3);
    p.training_step = true;
    const BackwardRun step = RunBackward(backend, p);
    const BackwardRun step_replayed = RunBackward(backend, p, graph, 3);
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

TEST(CudaReferenceBackwardTest, DeterministicOverRunsModesAndGraphReplay) {
  SKIP_WITHOUT_DEVICE();
  ExpectDeterministic(kCudaReferenceBackend);
}

// cuda_unfused: the rounds keep any two entries of a batched GEMM off the same accumulator, and
// cuBLAS gives the same bits for the same calls on one device.
TEST(CudaUnfusedBackwardTest, DeterministicOverRunsModesAndGraphReplay) {
  SKIP_WITHOUT_DEVICE();
  ExpectDeterministic(kCudaUnfusedBackend);
}

// Several hundred rows each way with D = 128: for cuda_reference, the query and key passes each
// run several chunks per row and grid-stride over many blocks; for cuda_unfused, GEMMs of every
// dimension past a tile, four rounds of two kv heads' entries.
TEST(CudaReferenceBackwardTest, LongerCausalGqaMatchesTheOracle) {
  SKIP_WITHOUT_DEVICE();
  Problem p = OddProblem();
  testing::SetLongerGqa(p);
  ExpectGradientsClose(RunBackward(kCudaReferenceBackend, p),
                       "S_q 300, S_kv 433, D 128, GQA 8/2, causal RoPE");
}

TEST(CudaUnfusedBackwardTest, LongerCausalGqaMatchesTheOracle) {
  SKIP_WITHOUT_DEVICE();
  Problem p = OddProblem();
  testing::SetLongerGqa(p);
  ExpectGradientsClose(RunBackward(kCudaUnfusedBackend, p),
                       "S_q 300, S_kv 433, D 128, GQA 8/2, causal RoPE");
}

void ExpectGradientsOnlyAfterARunAndOnlyForABackward(const std::string& name) {
  Backend* backend = Find(name);
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
  ExpectGradientsMatchOracle(name, p, (*w)->Inputs(), *g, name + " without BeforeIteration");
  // A forward workload computes no gradients.
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  absl::StatusOr<std::unique_ptr<Workload>> f = backend->Prepare(prefill, 0);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE((*f)->RunTimed().ok());
  EXPECT_EQ((*f)->Gradients().status().code(), absl::StatusCode::kUnimplemented);
}

TEST(CudaReferenceBackwardTest, GradientsOnlyAfterARunAndOnlyForABackward) {
  SKIP_WITHOUT_DEVICE();
  ExpectGradientsOnlyAfterARunAndOnlyForABackward(kCudaReferenceBackend);
}

TEST(CudaUnfusedBackwardTest, GradientsOnlyAfterARunAndOnlyForABackward) {
  SKIP_WITHOUT_DEVICE();
  ExpectGradientsOnlyAfterARunAndOnlyForABackward(kCudaUnfusedBackend);
}

// With the backward declared (flash/support.h FlashBackwardEnabled()) cuda_flash takes
// PHASE_BACKWARD; without it, it refuses naming the phase.
TEST(CudaReferenceBackwardTest, FlashDeclaresItsBackwardOrRefusesNamingThePhase) {
  SKIP_WITHOUT_DEVICE();
  Problem raw = OddProblem();
  raw.dtype = DType::kBFloat16;  // a dtype cuda_flash runs, so the phase is what it names
  const Problem p = NormalizeProblem(raw);
  Backend* backend = Find(kCudaFlashBackend);
  ASSERT_NE(backend, nullptr);
  const absl::Status s = backend->CheckSupported(p);
  if (cuda::flash::FlashBackwardEnabled()) {
    EXPECT_TRUE(s.ok()) << s;
    return;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("spec.phase=PHASE_BACKWARD"), std::string::npos) << s;
  EXPECT_EQ(backend->Prepare(p, 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

// cuda_unfused's backward has no derivative of a client expression: score_mod and mask_mod are
// refused with PHASE_BACKWARD, naming the field and the phase, before anything is prepared.
TEST(CudaUnfusedBackwardTest, RefusesExpressionsNamingFieldAndPhase) {
  SKIP_WITHOUT_DEVICE();
  Backend* backend = Find(kCudaUnfusedBackend);
  ASSERT_NE(backend, nullptr);
  for (const char* field : {"score_mod", "mask_mod"}) {
    Problem raw = OddProblem();
    if (std::string(field) == "score_mod") {
      raw.score_mod = "s - 0.25 * (q - kv)";
    } else {
      raw.mask_mod = "kv <= q";
    }
    const Problem p = NormalizeProblem(raw);
    ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
    const absl::Status s = backend->CheckSupported(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find(absl::StrCat("spec.", field, " with spec.phase=PHASE_BACKWARD")),
              std::string::npos)
        << s;
    EXPECT_EQ(backend->Prepare(p, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// A problem over the device's memory: RESOURCE_EXHAUSTED at once, before its inputs are
// generated on the host or anything is allocated; the device stays usable (checked on a run in
// `dtype`).
void ExpectTooLargeRefusedFirst(const std::string& name, DType dtype = DType::kFloat32) {
  Backend* backend = Find(name);
  ASSERT_NE(backend, nullptr);
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
  Problem after = OddProblem();
  after.dtype = dtype;
  ExpectGradientsClose(RunBackward(name, after), "after the refusal");
}

// The estimate a server compares with --max_request_bytes covers the forward's buffers and the
// backward's (DeviceBackward).
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
  ExpectTooLargeRefusedFirst(kCudaReferenceBackend);
}

// cuda_unfused's estimate adds to its forward's: DeviceBackward, the scratch the backward needs
// beyond the forward's (one buffer serves both in turn) and the rounds' heads.
TEST(CudaUnfusedBackwardTest, EstimateCoversTheBackwardAndTooLargeIsRefusedFirst) {
  SKIP_WITHOUT_DEVICE();
  Backend* backend = Find(kCudaUnfusedBackend);
  ASSERT_NE(backend, nullptr);
  constexpr uint64_t kBudget = 2ull << 30;  // cuda_backend.cc's kUnfusedMaxScratchBytes
  for (const auto& edit : std::vector<std::function<void(Problem&)>>{
           [](Problem&) {}, testing::SetAllModifiers, testing::SetLongerGqa}) {
    Problem raw = OddProblem();
    edit(raw);
    const Problem p = NormalizeProblem(raw);
    Problem prefill = p;
    prefill.phase = Phase::kPrefill;
    const ProblemShapes shapes = *ShapesOf(p);
    const cuda::AttentionArgs args = cuda::ShapeArgs(p, shapes);
    std::vector<int32_t> qh, kh;
    for (const HeadPair& hp : shapes.heads.map) {
      qh.push_back(hp.query_head);
      kh.push_back(hp.kv_head);
    }
    const uint64_t forward = cuda::UnfusedAttention::ScratchBytes(args, kBudget);
    const uint64_t backward = cuda::UnfusedBackward::ScratchBytes(
        args, cuda::UnfusedBackward::HeadRounds(qh, kh), kBudget);
    EXPECT_EQ(backend->EstimateBytes(p),
              backend->EstimateBytes(prefill) + cuda::DeviceBackward::EstimateBytes(p, shapes) +
                  (std::max(backward, forward) - forward) + 4 * shapes.heads.map.size());
  }
  ExpectTooLargeRefusedFirst(kCudaUnfusedBackend);
}

// UnfusedBackward's chunk loops with small budgets, on GQKVA 3 x 2 (three rounds of two heads:
// dQ sums two heads of a query head across rounds, dK and dV three) with every modifier and a
// causal window, in bfloat16: 3 entries of 37 rows per chunk (a round's 4 entries in chunks of 3
// and 1, crossing from batch 0 into batch 1), then one entry in blocks of 10 rows (row0 = 10, 20,
// 30: dK and dV summed over row blocks). The forward keeps the log-sum-exp with the default
// budget; every chunking must match the oracle.
TEST(CudaUnfusedBackwardTest, ChunksOfEntriesAndRowsMatchTheOracle) {
  SKIP_WITHOUT_DEVICE();
  int index = -1;
  for (size_t k = 0; k < AllCases().size(); ++k) {
    if (AllCases()[k].name == "all_modifiers_gqkva_window") index = static_cast<int>(k);
  }
  ASSERT_GE(index, 0);
  const Problem n = NormalizeProblem(testing::GpuBackwardCaseProblem(index, DType::kBFloat16));
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(n);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  absl::StatusOr<AttentionInputs> inputs = GenerateInputs(n);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  absl::StatusOr<std::unique_ptr<cuda::DeviceProblem>> resident =
      cuda::DeviceProblem::Create(n, *shapes, *inputs, /*l2_bytes=*/0);
  ASSERT_TRUE(resident.ok()) << resident.status();
  absl::StatusOr<std::unique_ptr<cuda::DeviceBackward>> state =
      cuda::DeviceBackward::Create(n, *shapes, *inputs);
  ASSERT_TRUE(state.ok()) << state.status();
  std::vector<int32_t> qh, kh;
  for (const HeadPair& hp : shapes->heads.map) {
    qh.push_back(hp.query_head);
    kh.push_back(hp.kv_head);
  }
  const cuda::UnfusedHeadRounds rounds = cuda::UnfusedBackward::HeadRounds(qh, kh);
  ASSERT_EQ(rounds.rounds(), 3);
  ASSERT_EQ(rounds.max_round_size(), 2);
  absl::StatusOr<cuda::DeviceBuffer> round_heads = cuda::DeviceBuffer::Upload(
      rounds.heads.data(), rounds.heads.size() * sizeof(int32_t), "rounds");
  ASSERT_TRUE(round_heads.ok()) << round_heads.status();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(handle, stream), CUBLAS_STATUS_SUCCESS);
  const cuda::AttentionArgs args = (*resident)->Args(0);
  const cuda::BackwardArgs& g = (*state)->Args();
  const uint64_t big = 2ull << 30;
  {
    absl::StatusOr<cuda::DeviceBuffer> scratch = cuda::DeviceBuffer::Allocate(
        cuda::UnfusedAttention::ScratchBytes(args, big), "forward scratch");
    ASSERT_TRUE(scratch.ok()) << scratch.status();
    const absl::Status forward = cuda::UnfusedAttention::Run(
        args, handle, scratch->get(), scratch->bytes(), big, stream, nullptr, g.lse);
    ASSERT_TRUE(forward.ok()) << forward;
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  }
  const uint64_t row_bytes = static_cast<uint64_t>(n.seq_len_kv) * 8;  // a row of S and of dP
  struct Budget {
    const char* name;
    uint64_t bytes;
    int64_t entries, rows;
  };
  for (const Budget& budget :
       {Budget{"entries", row_bytes * 37 * 3, 3, 37}, Budget{"rows", row_bytes * 10, 1, 10}}) {
    SCOPED_TRACE(budget.name);
    const cuda::UnfusedBackward::Plan plan =
        cuda::UnfusedBackward::MakePlan(args, rounds, budget.bytes);
    EXPECT_EQ(plan.entries_per_chunk, budget.entries);
    EXPECT_EQ(plan.rows_per_chunk, budget.rows);
    absl::StatusOr<cuda::DeviceBuffer> scratch =
        cuda::DeviceBuffer::Allocate(plan.total, "backward scratch");
    ASSERT_TRUE(scratch.ok()) << scratch.status();
    const absl::Status ran =
        cuda::UnfusedBackward::Run(args, g, rounds, round_heads->as<int32_t>(), handle,
                                   scratch->get(), scratch->bytes(), budget.bytes, stream);
    ASSERT_TRUE(ran.ok()) << ran;
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    absl::StatusOr<GradientTensors> grads = (*state)->DownloadGradients();
    ASSERT_TRUE(grads.ok()) << grads.status();
    ExpectGradientsMatchOracle(kCudaUnfusedBackend, n, *inputs, *grads, budget.name);
  }
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
}

// ---- cuda_flash
// ----------------------------------------------------------------------------------

// cuda_flash's backward (the mma.sync kernel, flash/backward_sm80.cuh) run through its launchers
// (flash.h), whatever FlashBackwardEnabled() says, so that the kernel is checked on the device
// before it is declared: the forward that keeps the log-sum-exp and float32 O, then the backward
// `backward_runs` times (each clears the dQ accumulator first), on fresh generated inputs.
struct DirectFlashRun {
  Problem problem;
  AttentionInputs inputs;
  GradientTensors gradients;
  FloatTensor output;
  bool ok = false;
};

DirectFlashRun RunFlashDirect(const Problem& raw, int backward_runs = 1) {
  DirectFlashRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  if (!valid.ok()) return r;
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(r.problem);
  EXPECT_TRUE(shapes.ok()) << shapes.status();
  if (!shapes.ok()) return r;
  absl::StatusOr<AttentionInputs> inputs = GenerateInputs(r.problem);
  EXPECT_TRUE(inputs.ok()) << inputs.status();
  if (!inputs.ok()) return r;
  r.inputs = *std::move(inputs);
  EXPECT_EQ(cudaSetDevice(0), cudaSuccess);
  absl::StatusOr<std::unique_ptr<cuda::DeviceProblem>> resident =
      cuda::DeviceProblem::Create(r.problem, *shapes, r.inputs, /*l2_bytes=*/0);
  EXPECT_TRUE(resident.ok()) << resident.status();
  if (!resident.ok()) return r;
  absl::StatusOr<std::unique_ptr<cuda::DeviceBackward>> state =
      cuda::DeviceBackward::Create(r.problem, *shapes, r.inputs);
  EXPECT_TRUE(state.ok()) << state.status();
  if (!state.ok()) return r;
  const cuda::AttentionArgs args = (*resident)->Args(0);
  const std::string refusal = cuda::flash::Sm80BackwardRefusal(args, cuda::flash::CurrentDevice());
  EXPECT_EQ(refusal, "");
  if (!refusal.empty()) return r;
  absl::StatusOr<cuda::DeviceBuffer> acc =
      cuda::DeviceBuffer::Allocate(cuda::flash::BackwardWorkspaceBytes(args), "the dQ accumulator");
  EXPECT_TRUE(acc.ok()) << acc.status();
  if (!acc.ok()) return r;
  cudaStream_t stream = nullptr;
  EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  const cuda::BackwardArgs& g = (*state)->Args();
  cudaError_t e = cuda::flash::LaunchForwardSaving(args, g, stream);
  EXPECT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
  for (int run = 0; run < backward_runs && e == cudaSuccess; ++run) {
    e = cuda::flash::LaunchBackward(args, g, acc->get(), stream);
    EXPECT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
  }
  const cudaError_t synced = cudaStreamSynchronize(stream);
  EXPECT_EQ(synced, cudaSuccess) << cudaGetErrorString(synced);
  cudaStreamDestroy(stream);
  if (e != cudaSuccess || synced != cudaSuccess) return r;
  absl::StatusOr<GradientTensors> grads = (*state)->DownloadGradients();
  EXPECT_TRUE(grads.ok()) << grads.status();
  if (!grads.ok()) return r;
  r.gradients = *std::move(grads);
  absl::StatusOr<FloatTensor> out = (*resident)->DownloadOutput();
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return r;
  r.output = *std::move(out);
  r.ok = true;
  return r;
}

// Every gradient element against the oracle (and the server's check), and the forward's output.
void ExpectDirectFlashRunMatches(const DirectFlashRun& r, const std::string& context) {
  ASSERT_TRUE(r.ok) << context;
  for (const FloatTensor* t : {&r.gradients.dq, &r.gradients.dk, &r.gradients.dv}) {
    for (float v : t->values) {
      if (!std::isfinite(v)) continue;  // counted as failures by the comparison below
      ASSERT_EQ(RoundToDType(v, r.problem.dtype), v) << context;
    }
  }
  ExpectGradientsMatchOracle(kCudaFlashBackend, r.problem, r.inputs, r.gradients,
                             "cuda_flash (direct) " + context);
  const std::vector<double> o = testing::NaiveAttention(r.problem, r.inputs);
  ExpectAllClose(r.output.values, o, r.output.shape,
                 testing::TensorCoreKernelTolerance(r.problem.dtype), context + " O");
}

using FlashParam = std::tuple<int, DType>;
std::string FlashVariantName(const ::testing::TestParamInfo<FlashParam>& info) {
  return absl::StrCat(AllCases()[std::get<0>(info.param)].name, "_",
                      DTypeName(std::get<1>(info.param)));
}

class CudaFlashBackwardKernelTest : public ::testing::TestWithParam<FlashParam> {};

// The kernel itself on every case (every layout, mask and modifier, S_q != S_kv both ways, odd
// head dims zero-padded to the 64 tile, D_qk 128 / D_v 64 on the 128 tile) in both dtypes.
TEST_P(CudaFlashBackwardKernelTest, EveryGradientElementMatchesTheFloat64Oracle) {
  SKIP_WITHOUT_DEVICE();
  const auto& [index, dtype] = GetParam();
  const DirectFlashRun r = RunFlashDirect(testing::GpuBackwardCaseProblem(index, dtype));
  ExpectDirectFlashRunMatches(r, absl::StrCat(AllCases()[index].name, "/", DTypeName(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaFlashBackwardKernelTest,
                         ::testing::Combine(::testing::Range(0,
                                                             static_cast<int>(AllCases().size())),
                                            ::testing::Values(DType::kBFloat16, DType::kFloat16)),
                         FlashVariantName);

// Several K/V tiles and query tiles of the 128 tile, causal with RoPE, GQA 8/2 (four heads summed
// into each kv head's dK and dV inside one block), S_q != S_kv.
TEST(CudaFlashBackwardKernelTest, LongerCausalGqaMatchesTheOracle) {
  SKIP_WITHOUT_DEVICE();
  Problem p = OddProblem();
  testing::SetLongerGqa(p);
  ExpectDirectFlashRunMatches(RunFlashDirect(p), "S_q 300, S_kv 433, D 128, GQA 8/2, causal RoPE");
}

// The 64 tile over many tiles each way: a window with every modifier, and non-causal MHA with
// query tiles past the last key tile (backward_cases.h FlashBackwardTileProblems).
TEST(CudaFlashBackwardKernelTest, ManyTilesOfTheSmallTileMatchTheOracle) {
  SKIP_WITHOUT_DEVICE();
  for (const testing::NamedProblem& p : testing::FlashBackwardTileProblems()) {
    ExpectDirectFlashRunMatches(RunFlashDirect(p.problem), p.name);
  }
}

// The launch clears the dQ accumulator itself: a second backward gives the same gradients (up to
// the order of the atomic additions), not twice them.
TEST(CudaFlashBackwardKernelTest, EachLaunchStartsFromAClearAccumulator) {
  SKIP_WITHOUT_DEVICE();
  Problem p = OddProblem();
  testing::SetAllModifiers(p);
  p.dtype = DType::kBFloat16;
  ExpectDirectFlashRunMatches(RunFlashDirect(p, /*backward_runs=*/3), "three backward launches");
}

// Through the backend, where cuda_flash declares its backward (FlashBackwardEnabled()): the
// variants in both timing modes, as cuda_reference and cuda_unfused above.
class CudaFlashBackwardTest : public ::testing::TestWithParam<VariantParam> {};

#define SKIP_UNLESS_FLASH_BACKWARD()                            \
  SKIP_WITHOUT_DEVICE();                                        \
  if (!cuda::flash::FlashBackwardEnabled())                     \
  GTEST_SKIP() << "cuda_flash does not declare PHASE_BACKWARD " \
                  "(kFlashBackwardEnabled in kernels/cuda/flash/support.cc)"

TEST_P(CudaFlashBackwardTest, EveryGradientElementMatchesTheFloat64Oracle) {
  SKIP_UNLESS_FLASH_BACKWARD();
  const auto& [index, dtype, training_step] = GetParam();
  CheckVariant(kCudaFlashBackend, index, dtype, training_step);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CudaFlashBackwardTest,
    ::testing::Combine(::testing::Range(0, static_cast<int>(AllCases().size())),
                       ::testing::Values(DType::kBFloat16, DType::kFloat16), ::testing::Bool()),
    VariantName);

// Both timing modes and CUDA-graph replay give gradients within the bound (not bit for bit: dQ
// is summed with atomics), and the forward's output bit for bit (no atomics there).
TEST(CudaFlashBackwardTest, TimingModesAndGraphReplayMatchTheOracle) {
  SKIP_UNLESS_FLASH_BACKWARD();
  for (DType d : {DType::kBFloat16, DType::kFloat16}) {
    Problem p = OddProblem();
    testing::SetAllModifiers(p);
    p.dtype = d;
    const BackwardRun once = RunBackward(kCudaFlashBackend, p);
    const BackwardRun rotated = RunBackward(kCudaFlashBackend, p, NoFlush(), 5);
    IterationOptions graph;
    graph.use_cuda_graph = true;
    const BackwardRun replayed = RunBackward(kCudaFlashBackend, p, graph, 3);
    p.training_step = true;
    const BackwardRun step = RunBackward(kCudaFlashBackend, p);
    const BackwardRun step_replayed = RunBackward(kCudaFlashBackend, p, graph, 3);
    for (const BackwardRun* r : {&once, &rotated, &replayed, &step, &step_replayed}) {
      ASSERT_NE(r->workload, nullptr);
      ExpectGradientsClose(*r, DTypeName(d));
      EXPECT_EQ(r->output.values, once.output.values) << DTypeName(d);
      EXPECT_EQ(r->workload->KernelName().rfind("mma.sync backward", 0), 0u)
          << r->workload->KernelName();
    }
  }
}

TEST(CudaFlashBackwardTest, GradientsOnlyAfterARunAndOnlyForABackward) {
  SKIP_UNLESS_FLASH_BACKWARD();
  Backend* backend = Find(kCudaFlashBackend);
  ASSERT_NE(backend, nullptr);
  Problem raw = OddProblem();
  raw.dtype = DType::kBFloat16;
  const Problem p = NormalizeProblem(raw);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*w)->RunTimed().ok());
  absl::StatusOr<GradientTensors> g = (*w)->Gradients();
  ASSERT_TRUE(g.ok()) << g.status();
  ExpectGradientsMatchOracle(kCudaFlashBackend, p, (*w)->Inputs(), *g,
                             "cuda_flash without BeforeIteration");
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  absl::StatusOr<std::unique_ptr<Workload>> f = backend->Prepare(prefill, 0);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE((*f)->RunTimed().ok());
  EXPECT_EQ((*f)->Gradients().status().code(), absl::StatusCode::kUnimplemented);
}

// What its backward refuses, by field and phase: client expressions, float32.
TEST(CudaFlashBackwardTest, RefusesExpressionsAndFloat32NamingTheField) {
  SKIP_UNLESS_FLASH_BACKWARD();
  Backend* backend = Find(kCudaFlashBackend);
  ASSERT_NE(backend, nullptr);
  for (const char* field : {"score_mod", "mask_mod"}) {
    Problem raw = OddProblem();
    raw.dtype = DType::kBFloat16;
    if (std::string(field) == "score_mod") {
      raw.score_mod = "s - 0.25 * (q - kv)";
    } else {
      raw.mask_mod = "kv <= q";
    }
    const Problem p = NormalizeProblem(raw);
    ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
    const absl::Status s = backend->CheckSupported(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find(absl::StrCat("spec.", field, " with spec.phase=PHASE_BACKWARD")),
              std::string::npos)
        << s;
    EXPECT_EQ(backend->Prepare(p, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  }
  const Problem fp32 = NormalizeProblem(OddProblem());
  const absl::Status s = backend->CheckSupported(fp32);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("spec.dtype"), std::string::npos) << s;
}

// The estimate adds DeviceBackward's buffers and the float32 dQ accumulator to the forward's
// (whose Hopper-only tables the backward's forward does not need: none for this problem).
TEST(CudaFlashBackwardTest, EstimateCoversTheBackwardAndTooLargeIsRefusedFirst) {
  SKIP_UNLESS_FLASH_BACKWARD();
  Backend* backend = Find(kCudaFlashBackend);
  ASSERT_NE(backend, nullptr);
  Problem raw = OddProblem();
  raw.dtype = DType::kBFloat16;
  const Problem p = NormalizeProblem(raw);
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  const ProblemShapes shapes = *ShapesOf(p);
  EXPECT_EQ(backend->EstimateBytes(p),
            backend->EstimateBytes(prefill) + cuda::DeviceBackward::EstimateBytes(p, shapes) +
                cuda::flash::BackwardWorkspaceBytes(cuda::ShapeArgs(p, shapes)));
  ExpectTooLargeRefusedFirst(kCudaFlashBackend, DType::kBFloat16);
}

// ---- SCOPE_LAYER with PHASE_BACKWARD: layer_gradients.h around each backend's core backward ----

// The layer backward is declared only once it has passed here (cuda_support.h
// CudaLayerBackwardEnabled); this binary declares it for its own process.
void DeclareLayerBackward() { EnableCudaLayerBackwardForTest(); }

// B = 2, S = 77 (no tile's multiple), d_model = 200, a layer-scope backward edited by a case.
struct LayerCase {
  const char* name;
  void (*edit)(Problem&);
};

const LayerCase kLayerCases[] = {
    // Q, K, V of one width: the input projections one batched GEMM, dX over three equal widths.
    {"mha_causal_rope",
     [](Problem& p) {
       testing::SetMha(p, 4);
       p.head_dim_qk = 64;
       p.head_dim_v = 64;
       p.mask.kind = MaskKind::kCausal;
       p.rope.enabled = true;
     }},
    // GQA 6/2 with D_qk 40 != D_v 24: three widths, causal with RoPE, ALiBi and softcap.
    {"gqa_causal_modifiers", [](Problem& p) { testing::SetAllModifiers(p); }},
    // SQA 8 -> 4/2 at D 64, causal: fewer query heads than the baseline.
    {"sqa_causal",
     [](Problem& p) {
       testing::SetSqa(p, 8, 4, 2);
       p.head_dim_qk = 64;
       p.head_dim_v = 64;
       p.mask.kind = MaskKind::kCausal;
     }},
};

Problem LayerProblem(const LayerCase& c, DType dtype, bool training_step) {
  Problem p = OddProblem();
  p.seq_len_q = p.seq_len_kv = 77;
  c.edit(p);
  p.scope = Scope::kLayer;
  p.d_model = 200;
  p.dtype = dtype;
  p.training_step = training_step;
  p.seed = 5151 + static_cast<int>(dtype);
  return p;
}

// The relative L2 error of each of dX, dW_q, dW_k, dW_v, dW_o against the layer's float64 oracle
// (layer_backward64, checked against finite differences), recorded as a test property; on
// cuda_reference, which computes what cpu_reference does (float32 sums, each gradient and every
// intermediate rounded once to the dtype), under cpu_layer_backward_test.cc's bounds. Then the
// server's check on every row must pass, naming the five.
void ExpectLayerGradientsClose(const BackwardRun& r, const std::string& context) {
  ASSERT_NE(r.workload, nullptr) << context;
  const AttentionInputs& inputs = r.workload->Inputs();
  absl::StatusOr<LayerGradients64> ref = LayerBackward64(r.problem, inputs, 4);
  ASSERT_TRUE(ref.ok()) << context << ": " << ref.status();
  const ProblemShapes shapes = *ShapesOf(r.problem);
  const struct {
    const char* name;
    const FloatTensor& got;
    const std::vector<double>& want;
    const Shape& shape;
  } tensors[] = {{"dX", r.gradients.dx, ref->dx, shapes.x},
                 {"dW_q", r.gradients.dw_q, ref->dw_q, shapes.w_q},
                 {"dW_k", r.gradients.dw_k, ref->dw_k, shapes.w_k},
                 {"dW_v", r.gradients.dw_v, ref->dw_v, shapes.w_v},
                 {"dW_o", r.gradients.dw_o, ref->dw_o, shapes.w_o}};
  for (const auto& t : tensors) {
    EXPECT_EQ(t.got.shape, t.shape) << context << " " << t.name;
    EXPECT_EQ(t.got.dtype, r.problem.dtype) << context << " " << t.name;
    ASSERT_EQ(t.got.values.size(), t.want.size()) << context << " " << t.name;
    for (float v : t.got.values) {
      ASSERT_TRUE(std::isfinite(v)) << context << " " << t.name << ": an element left unwritten";
      ASSERT_EQ(RoundToDType(v, r.problem.dtype), v) << context << " " << t.name;
    }
    const double err = testing::RelativeError(t.got.values, t.want);
    ::testing::Test::RecordProperty(context + "_" + t.name, absl::StrCat(err));
    if (r.backend == kCudaReferenceBackend) {
      const double bound = r.problem.dtype == DType::kFloat16    ? 1e-3
                           : r.problem.dtype == DType::kBFloat16 ? 5e-3
                                                                 : 5e-6;
      EXPECT_LE(err, bound) << context << " " << t.name;
    }
  }
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report = CheckGradients(r.problem, inputs, r.gradients, full);
  ASSERT_TRUE(report.ok()) << context << ": " << report.status();
  EXPECT_TRUE(report->passed) << context << ": oracle relative error " << report->relative_error;
  EXPECT_EQ(report->rows_checked, report->rows_total) << context;
  ASSERT_EQ(report->tensors.size(), 5u) << context;
  EXPECT_EQ(report->tensors[0].name, "dx") << context;
  // Y is the layer's forward (the backward's own forward ran it), under the GPU layer's bound.
  const std::vector<double> y = testing::NaiveAttention(r.problem, inputs);
  ExpectAllClose(r.output.values, y, r.output.shape, testing::LayerKernelTolerance(r.problem.dtype),
                 context + " Y");
}

class CudaLayerBackwardTest
    : public ::testing::TestWithParam<std::tuple<std::string, DType, bool>> {};

// Every case on the backend in the dtype and timing mode: the gradients against the oracle, Y,
// and the time split (a training step's forward and backward, or the backward alone, both with
// products and core).
TEST_P(CudaLayerBackwardTest, EveryGradientMatchesTheFloat64Oracle) {
  SKIP_WITHOUT_DEVICE();
  DeclareLayerBackward();
  const auto& [name, dtype, training_step] = GetParam();
  Backend* backend = Find(name);
  ASSERT_NE(backend, nullptr);
  for (const LayerCase& c : kLayerCases) {
    const Problem p = NormalizeProblem(LayerProblem(c, dtype, training_step));
    const std::string context = absl::StrCat(name, "/", DTypeName(dtype), "/", c.name,
                                             training_step ? "/training_step" : "/backward_only");
    if (absl::Status s = backend->CheckSupported(p); !s.ok()) {
      // cuda_flash: its backward's dtypes and head dims; every other backend runs every case.
      EXPECT_EQ(name, kCudaFlashBackend) << context << ": " << s;
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << context << ": " << s;
      continue;
    }
    const BackwardRun r = RunBackward(name, p, NoFlush());
    ExpectLayerGradientsClose(r, context);
    ASSERT_NE(r.workload, nullptr) << context;
    const std::optional<LayerSplit> split = r.workload->LastLayerSplit();
    ASSERT_TRUE(split.has_value()) << context;
    EXPECT_GT(split->projections_seconds, 0) << context;
    EXPECT_GT(split->core_seconds, 0) << context;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, CudaLayerBackwardTest,
    ::testing::Combine(::testing::Values(kCudaReferenceBackend, kCudaUnfusedBackend,
                                         kCudaFlashBackend),
                       ::testing::Values(DType::kFloat32, DType::kBFloat16, DType::kFloat16),
                       ::testing::Bool()),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param), "_", DTypeName(std::get<1>(info.param)), "_",
                          std::get<2>(info.param) ? "training_step" : "backward_only");
    });

// The deterministic backends' layer backward (cuBLAS gives the same bits for the same calls on
// one device): the same gradients and Y bit for bit over iterations, in both timing modes and
// under CUDA-graph replay, which records no split.
TEST(CudaLayerBackwardTest, DeterministicOverRunsModesAndGraphReplay) {
  SKIP_WITHOUT_DEVICE();
  DeclareLayerBackward();
  for (const char* name : {kCudaReferenceBackend, kCudaUnfusedBackend}) {
    Problem p = LayerProblem(kLayerCases[1], DType::kBFloat16, /*training_step=*/false);
    const BackwardRun once = RunBackward(name, p, NoFlush());
    const BackwardRun again = RunBackward(name, p, NoFlush(), 3);
    IterationOptions graph = NoFlush();
    graph.use_cuda_graph = true;
    const BackwardRun replayed = RunBackward(name, p, graph, 3);
    p.training_step = true;
    const BackwardRun step = RunBackward(name, p, NoFlush());
    const BackwardRun step_replayed = RunBackward(name, p, graph, 3);
    ASSERT_NE(once.workload, nullptr) << name;
    for (const BackwardRun* other : {&again, &replayed, &step, &step_replayed}) {
      ASSERT_NE(other->workload, nullptr) << name;
      EXPECT_EQ(other->gradients.dx.values, once.gradients.dx.values) << name;
      EXPECT_EQ(other->gradients.dw_q.values, once.gradients.dw_q.values) << name;
      EXPECT_EQ(other->gradients.dw_k.values, once.gradients.dw_k.values) << name;
      EXPECT_EQ(other->gradients.dw_v.values, once.gradients.dw_v.values) << name;
      EXPECT_EQ(other->gradients.dw_o.values, once.gradients.dw_o.values) << name;
      EXPECT_EQ(other->output.values, once.output.values) << name;
    }
    EXPECT_FALSE(replayed.workload->LastLayerSplit().has_value()) << name;
    EXPECT_FALSE(step_replayed.workload->LastLayerSplit().has_value()) << name;
  }
}

// Gradients only after a run; the estimate adds the layer backward's buffers (dY, [W_q W_k W_v],
// [dQ dK dV], dX, the weight gradients) and DeviceBackward's to the layer forward's.
TEST(CudaLayerBackwardTest, GradientsOnlyAfterARunAndTheEstimateCoversTheBuffers) {
  SKIP_WITHOUT_DEVICE();
  DeclareLayerBackward();
  for (const char* name : {kCudaReferenceBackend, kCudaUnfusedBackend}) {
    Backend* backend = Find(name);
    ASSERT_NE(backend, nullptr);
    const Problem p =
        NormalizeProblem(LayerProblem(kLayerCases[0], DType::kBFloat16, /*training_step=*/false));
    absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition) << name;
    ASSERT_TRUE((*w)->RunTimed().ok()) << name;  // the forward still runs first, untimed
    ASSERT_TRUE((*w)->Gradients().ok()) << name;
    Problem prefill = p;
    prefill.phase = Phase::kPrefill;
    const ProblemShapes s = *ShapesOf(p);
    const uint64_t own =
        2 * (NumElements(s.x) + NumElements(s.w_q) + NumElements(s.w_k) + NumElements(s.w_v)) +
        NumElements(s.query) + NumElements(s.key) + NumElements(s.value) + NumElements(s.w_o);
    EXPECT_GE(backend->EstimateBytes(p),
              backend->EstimateBytes(prefill) + cuda::DeviceBackward::EstimateBytes(p, s) + 2 * own)
        << name;
  }
}

}  // namespace
}  // namespace attnbench
