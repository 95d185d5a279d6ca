// cuda_unfused with client expressions (spec.score_mod, spec.mask_mod, spec.aux) on a GPU: each
// case writes its expression twice, as text for the backend and as C++ for the tests' own
// float64 attention (naive_attention.h), and every output element must agree on fresh inputs of
// odd sizes (B = 2, S_q = 37, S_kv = 53, GQA 6/3, D_qk = 40, D_v = 24), then the kernels' float64
// oracle must pass too. Covers ALiBi from an aux slope table, softcap, document masking from aux
// ids, sliding window with sinks, prefix-LM, a relative-bias table, every built-in modifier
// underneath an expression (the order scale -> ALiBi -> softcap -> score_mod -> mask), decode,
// 16-bit storage; the chunked paths (several (b, h) pairs per chunk starting mid-batch, and
// query rows in pieces) by running UnfusedAttention directly with a small score budget; and the
// process-wide cache (a second Prepare of the same expressions compiles nothing). Skips without
// a device, or without libnvrtc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/expr/device_expressions.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/reference/check.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/expression_cases.h"
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

const std::vector<std::unique_ptr<Backend>>& Backends() {
  static const auto* const backends = new std::vector<std::unique_ptr<Backend>>(MakeCudaBackends());
  return *backends;
}

Backend* Unfused() {
  for (const auto& b : Backends()) {
    if (b->Name() == kCudaUnfusedBackend) return b.get();
  }
  return nullptr;
}

#define SKIP_WITHOUT_DEVICE_OR_NVRTC()                                      \
  if (Backends().empty()) GTEST_SKIP() << "no CUDA device on this machine"; \
  if (!cuda::NvrtcAvailable()) GTEST_SKIP() << "libnvrtc is not on this machine"

// GQA 6/3: output head h reads KV head h / 2.
int KvHeadOf(int h) { return h / 2; }

std::vector<Case> Cases() {
  std::vector<Case> c = testing::CommonExpressionCases();
  {
    // Both expressions on top of RoPE, ALiBi, softcap and causal: the score_mod must see the
    // capped score (a score_mod applied before softcap, or a -inf from the mask_mod passed
    // through tanh, would both show), with per-batch and per-KV-head terms.
    Case k{"both_after_every_builtin",
           [](Problem& p) {
             AllBuiltins(p);
             p.score_mod = "s * 0.9 + bias[h, min(max(q - kv, 0), 15)] * (b + 1)";
             p.mask_mod = "hkv == 1 || doc[q] == doc[kv] || kv < 3";
             p.aux = {Aux("bias", {6, 16}, BiasTable()), Aux("doc", {53}, DocIds())};
           },
           {}};
    k.naive.score_mod = [](double s, int64_t b, int h, int64_t q, int64_t kv) {
      return s * 0.9 + Bias(h, std::min<int64_t>(std::max<int64_t>(q - kv, 0), 15)) * (b + 1);
    };
    k.naive.mask_mod = [](int64_t, int h, int64_t q, int64_t kv) {
      return KvHeadOf(h) == 1 || DocOf(q) == DocOf(kv) || kv < 3;
    };
    c.push_back(k);
  }
  {
    // A mask_mod intersected with a built-in window, with softcap underneath.
    Case k{"mask_mod_and_window",
           [](Problem& p) {
             p.mask.kind = MaskKind::kSlidingWindow;
             p.mask.left_tokens = 20;
             p.mask.right_tokens = 3;
             p.softcap = {true, 1.5};
             p.mask_mod = "kv % 3 != 1";
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t, int64_t kv) { return kv % 3 != 1; };
    c.push_back(k);
  }
  {
    // Decode: one query at position S_kv - 1 = 52.
    Case k{"decode",
           [](Problem& p) {
             p.phase = Phase::kDecode;
             p.seq_len_q = 1;
             p.score_mod = "s + slope[h] * (kv - q)";
             p.mask_mod = "kv < 4 || q - kv < 16";
             p.aux = {Aux("slope", {6}, kSlopes)};
           },
           {}};
    k.naive.score_mod = [](double s, int64_t, int h, int64_t q, int64_t kv) {
      return s + kSlopes[h] * static_cast<double>(kv - q);
    };
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return kv < 4 || q - kv < 16; };
    c.push_back(k);
  }
  return c;
}

// Every element against the naive float64 attention with the expressions' C++ twins, then the
// kernels' own oracle (which interprets the expressions).
void ExpectMatches(const Problem& n, const AttentionInputs& inputs, const FloatTensor& output,
                   const NaiveOptions& naive, const std::string& context) {
  const std::vector<double> ref = testing::NaiveAttention(n, inputs, naive);
  ASSERT_EQ(output.values.size(), ref.size()) << context;
  testing::ExpectAllClose(output.values, ref, output.shape,
                          testing::TensorCoreKernelTolerance(n.dtype), context);
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report = CheckOutput(n, inputs, output, full);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << context << ": oracle relative error " << report->relative_error;
}

class UnfusedExpressionCaseTest : public ::testing::TestWithParam<std::tuple<int, DType>> {};

TEST_P(UnfusedExpressionCaseTest, MatchesFloat64Reference) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  const auto& [index, dtype] = GetParam();
  const Case c = Cases()[index];
  Problem p = testing::OddGqaProblem();
  p.dtype = dtype;
  c.edit(p);
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  Backend* backend = Unfused();
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(backend->CheckSupported(n).ok()) << backend->CheckSupported(n);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(n, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  IterationOptions options;
  ASSERT_TRUE((*w)->BeforeIteration(options).ok());
  absl::StatusOr<double> seconds = (*w)->RunTimed();
  ASSERT_TRUE(seconds.ok()) << seconds.status();
  absl::StatusOr<FloatTensor> out = (*w)->Output();
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatches(n, (*w)->Inputs(), *out, c.naive, absl::StrCat(c.name, "/", DTypeName(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Cases, UnfusedExpressionCaseTest,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(Cases().size())),
                                            ::testing::Values(DType::kFloat32, DType::kFloat16,
                                                              DType::kBFloat16)),
                         [](const ::testing::TestParamInfo<std::tuple<int, DType>>& info) {
                           return absl::StrCat(Cases()[std::get<0>(info.param)].name, "_",
                                               DTypeName(std::get<1>(info.param)));
                         });

// A CUDA graph replays the expression kernels like the rest (they are enqueued, not run, by
// Enqueue), and a warm-cache run gives the same output as the cold one.
TEST(UnfusedExpressionsTest, GraphReplayGivesTheSameOutput) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  const Case c = Cases()[6];  // both_after_every_builtin
  Problem p = testing::OddGqaProblem();
  c.edit(p);
  const Problem n = NormalizeProblem(p);
  absl::StatusOr<std::unique_ptr<Workload>> w = Unfused()->Prepare(n, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  IterationOptions graph;
  graph.use_cuda_graph = true;
  graph.flush_cache = false;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*w)->BeforeIteration(graph).ok());
    absl::StatusOr<double> seconds = (*w)->RunTimed();
    ASSERT_TRUE(seconds.ok()) << seconds.status();
  }
  absl::StatusOr<FloatTensor> out = (*w)->Output();
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatches(n, (*w)->Inputs(), *out, c.naive, "graph replay");
}

// The score budget forced small, so the chunk loop runs: several (b, h) pairs per chunk starting
// mid-batch (pair0 = 5, 10 with 6 heads), and one pair with query rows in pieces (row0 = 10, 20,
// 30). The expression kernels must see each chunk's pairs and rows at their own positions.
TEST(UnfusedExpressionsTest, ChunksOfPairsAndRowsMatchTheReference) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  const Case c = Cases()[6];  // both_after_every_builtin: b, h, hkv, q and kv all matter
  Problem p = testing::OddGqaProblem();
  c.edit(p);
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(n);
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  absl::StatusOr<AttentionInputs> inputs = GenerateInputs(n);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  absl::StatusOr<std::unique_ptr<cuda::DeviceProblem>> resident =
      cuda::DeviceProblem::Create(n, *shapes, *inputs, /*l2_bytes=*/0);
  ASSERT_TRUE(resident.ok()) << resident.status();
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(n);
  ASSERT_TRUE(exprs.ok() && *exprs != nullptr);
  std::vector<int32_t> qh, kh;
  for (const HeadPair& hp : shapes->heads.map) {
    qh.push_back(hp.query_head);
    kh.push_back(hp.kv_head);
  }
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  absl::StatusOr<std::unique_ptr<cuda::DeviceExpressions>> device_exprs =
      cuda::DeviceExpressions::Create(**exprs, qh, kh, n.seq_len_q, n.seq_len_kv,
                                      cuda::ExpressionArch(major, minor),
                                      cuda::SharedExpressionModuleCache());
  ASSERT_TRUE(device_exprs.ok()) << device_exprs.status();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(handle, stream), CUBLAS_STATUS_SUCCESS);
  const cuda::AttentionArgs args = (*resident)->Args(0);
  const uint64_t row_bytes = static_cast<uint64_t>(n.seq_len_kv) * 4;
  struct Budget {
    const char* name;
    uint64_t bytes;
  };
  // 5 pairs of 37 rows per chunk: pairs 0-4, 5-9 (crossing into batch 1), 10-11. Then 10 rows of
  // one pair per chunk: rows 0-9, 10-19, 20-29, 30-36.
  for (const Budget& budget :
       {Budget{"pairs", row_bytes * 37 * 5}, Budget{"rows", row_bytes * 10}}) {
    SCOPED_TRACE(budget.name);
    ASSERT_TRUE((*resident)->PoisonOutput().ok());
    absl::StatusOr<cuda::DeviceBuffer> scratch = cuda::DeviceBuffer::Allocate(
        cuda::UnfusedAttention::ScratchBytes(args, budget.bytes), "scratch");
    ASSERT_TRUE(scratch.ok()) << scratch.status();
    const absl::Status ran = cuda::UnfusedAttention::Run(
        args, handle, scratch->get(), scratch->bytes(), budget.bytes, stream, device_exprs->get());
    ASSERT_TRUE(ran.ok()) << ran;
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    absl::StatusOr<FloatTensor> out = (*resident)->DownloadOutput();
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectMatches(n, *inputs, *out, c.naive, budget.name);
  }
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
}

// The first Prepare of an expression compiles it (a miss, reported in ExpressionCompileSeconds);
// a second Prepare of the same expressions at the same shape is a hit and reports 0.
TEST(UnfusedExpressionsTest, SecondPrepareIsACacheHit) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  Problem p = testing::OddGqaProblem();
  // Text no other test uses, so the first Prepare below is a miss whatever ran before.
  p.score_mod = "s - 0.0078125 * (q - kv) + 0.001953125 * hq";
  const Problem n = NormalizeProblem(p);
  cuda::ExpressionModuleCache& cache = cuda::SharedExpressionModuleCache();
  const cuda::ExpressionCacheStats before = cache.Stats();
  absl::StatusOr<std::unique_ptr<Workload>> first = Unfused()->Prepare(n, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT((*first)->ExpressionCompileSeconds(), 0);
  const cuda::ExpressionCacheStats mid = cache.Stats();
  EXPECT_EQ(mid.misses, before.misses + 1);
  EXPECT_EQ(mid.hits, before.hits);
  absl::StatusOr<std::unique_ptr<Workload>> second = Unfused()->Prepare(n, 0);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->ExpressionCompileSeconds(), 0);
  const cuda::ExpressionCacheStats after = cache.Stats();
  EXPECT_EQ(after.misses, mid.misses);
  EXPECT_EQ(after.hits, mid.hits + 1);
  // Without expressions nothing is compiled or looked up.
  Problem plain = testing::OddGqaProblem();
  absl::StatusOr<std::unique_ptr<Workload>> none = Unfused()->Prepare(NormalizeProblem(plain), 0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ((*none)->ExpressionCompileSeconds(), 0);
  EXPECT_EQ(cache.Stats().hits + cache.Stats().misses, after.hits + after.misses);
}

// cuda_reference refuses expressions naming the field, on the device as in the allow-lists, so
// `auto` moves on (cuda_flash runs them too: flash_expressions_test.cc).
TEST(UnfusedExpressionsTest, ReferenceRefusesNamingTheField) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  Problem p = testing::OddGqaProblem();
  p.dtype = DType::kFloat16;
  p.mask_mod = "kv <= q";
  const Problem n = NormalizeProblem(p);
  for (const auto& b : Backends()) {
    if (b->Name() != kCudaReferenceBackend) {
      EXPECT_TRUE(b->CheckSupported(n).ok()) << b->CheckSupported(n);
      continue;
    }
    const absl::Status s = b->CheckSupported(n);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << b->Name();
    EXPECT_NE(std::string(s.message()).find("mask_mod"), std::string::npos) << s;
    EXPECT_EQ(b->Prepare(n, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace attnbench
