// cuda_flash running client expressions (spec.score_mod, spec.mask_mod, spec.aux) inside its fused
// kernel, compiled with NVRTC, on a GPU: the expression cases cpu_reference and cuda_unfused share
// (tests/kernels/expression_cases.h) plus longer ones where the mask_mod's tile classes skip and
// keep whole tiles (document mask over 8 documents, window with sinks, a head-dependent mask_mod
// over explicit and probabilistic block-sparse masks, every built-in under both expressions), in
// float16 and bfloat16, on both kernels (head dims 40/24 take the Hopper kernel on an H100, 36/20
// the mma.sync kernel everywhere), every output element against the tests' float64 attention with
// the expressions' C++ twins, then the float64 oracle. Also: a CUDA graph replays the NVRTC
// kernel, a second Prepare is a cache hit, and the mask_mod's classification is reported as
// mask preparation. Skips without a device or without libnvrtc and the CUDA headers.
#include <cuda_runtime.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/reference/check.h"
#include "kernels/spec/dtype.h"
#include "tests/kernels/expression_cases.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::AllBuiltins;
using testing::Aux;
using testing::kSlopes;
using Case = testing::ExpressionCase;

const std::vector<std::unique_ptr<Backend>>& Backends() {
  static const auto* const backends = new std::vector<std::unique_ptr<Backend>>(MakeCudaBackends());
  return *backends;
}

Backend* Flash() {
  for (const auto& b : Backends()) {
    if (b->Name() == kCudaFlashBackend) return b.get();
  }
  return nullptr;
}

#define SKIP_WITHOUT_DEVICE_OR_NVRTC()                                            \
  if (Backends().empty()) GTEST_SKIP() << "no CUDA device on this machine";       \
  if (!cuda::NvrtcAvailable()) GTEST_SKIP() << "libnvrtc is not on this machine"; \
  if (!cuda::flash::FlashRtcIncludeDirs().ok()) {                                 \
    GTEST_SKIP() << cuda::flash::FlashRtcIncludeDirs().status();                  \
  }

// Long cases: S_q = 650, S_kv = 700 (ragged against every tile), document ids over the keys.
constexpr int64_t kLongQ = 650;
constexpr int64_t kLongKv = 700;
float LongDoc(int64_t j) { return static_cast<float>((j * 8) / kLongKv); }  // 8 documents
std::vector<float> LongDocIds() {
  std::vector<float> d(kLongKv);
  for (int64_t j = 0; j < kLongKv; ++j) d[j] = LongDoc(j);
  return d;
}
void Long(Problem& p) {
  p.seq_len_q = kLongQ;
  p.seq_len_kv = kLongKv;
}

std::vector<Case> Cases() {
  std::vector<Case> c = testing::CommonExpressionCases();
  {
    Case k{"both_after_every_builtin",
           [](Problem& p) {
             AllBuiltins(p);
             p.score_mod = "s * 0.9 + slope[h] * (kv - q) * (b + 1)";
             p.mask_mod = "hkv == 1 || kv % 5 != 2 || kv < 3";
             p.aux = {Aux("slope", {6}, kSlopes)};
           },
           {}};
    k.naive.score_mod = [](double s, int64_t b, int h, int64_t q, int64_t kv) {
      return s * 0.9 + kSlopes[h] * static_cast<double>(kv - q) * static_cast<double>(b + 1);
    };
    k.naive.mask_mod = [](int64_t, int h, int64_t, int64_t kv) {
      return h / 2 == 1 || kv % 5 != 2 || kv < 3;
    };
    c.push_back(k);
  }
  {
    Case k{"long_document_mask",
           [](Problem& p) {
             Long(p);
             p.mask.kind = MaskKind::kCausal;
             p.mask_mod = "doc[q] == doc[kv]";
             p.aux = {Aux("doc", {kLongKv}, LongDocIds())};
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) {
      return LongDoc(q) == LongDoc(kv);
    };
    c.push_back(k);
  }
  {
    Case k{"long_window_with_sinks_and_softcap",
           [](Problem& p) {
             Long(p);
             p.mask.kind = MaskKind::kCausal;
             p.mask_mod = "kv < 4 || q - kv < 150";
             p.score_mod = "30 * tanh(s / 30)";
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return kv < 4 || q - kv < 150; };
    k.naive.score_mod = [](double s, int64_t, int, int64_t, int64_t) {
      return 30 * std::tanh(s / 30);
    };
    c.push_back(k);
  }
  {
    // A mask_mod that reads the head over one explicit block list for all heads: lists (and the
    // bitmap) per (b, h).
    Case k{"long_head_mask_over_block_sparse",
           [](Problem& p) {
             Long(p);
             p.mask.kind = MaskKind::kBlockSparse;
             p.mask.query_block_tokens = 64;
             p.mask.kv_block_tokens = 64;
             for (int64_t r = 0; r < 11; ++r) {
               for (int64_t col = 0; col < 11; ++col) {
                 if ((r + 2 * col) % 3 != 0) p.mask.blocks.push_back({r, col});
               }
             }
             p.mask_mod = "(kv / 96 + h) % 4 != 0";
           },
           {}};
    k.naive.mask_mod = [](int64_t, int h, int64_t, int64_t kv) { return (kv / 96 + h) % 4 != 0; };
    c.push_back(k);
  }
  {
    Case k{"long_batch_mask_over_probabilistic",
           [](Problem& p) {
             Long(p);
             p.mask.kind = MaskKind::kProbabilisticBlockSparse;
             p.mask.query_block_tokens = 64;
             p.mask.kv_block_tokens = 64;
             p.mask.c_coefficient = 0.8;
             p.mask.alpha = 0.7;
             p.mask.seed = 5;
             p.mask_mod = "b == 0 || kv % 200 < 150";
             p.score_mod = "s - 0.01 * (q - kv)";
           },
           {}};
    k.naive.mask_mod = [](int64_t b, int, int64_t, int64_t kv) { return b == 0 || kv % 200 < 150; };
    k.naive.score_mod = [](double s, int64_t, int, int64_t q, int64_t kv) {
      return s - 0.01 * static_cast<double>(q - kv);
    };
    c.push_back(k);
  }
  return c;
}

// The two kernels: head dims that take the Hopper kernel on an H100 (multiples of 8), and dims
// only the mma.sync kernel runs (TMA needs multiples of 8).
struct Dims {
  const char* name;
  int qk, v;
};
const Dims kDims[] = {{"hopper_dims", 40, 24}, {"mma_sync_dims", 36, 20}};

void ExpectMatches(const Problem& n, const AttentionInputs& inputs, const FloatTensor& output,
                   const testing::NaiveOptions& naive, const std::string& context) {
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

Problem Build(const Case& c, DType dtype, const Dims& dims) {
  Problem p = testing::OddGqaProblem();
  p.dtype = dtype;
  p.head_dim_qk = dims.qk;
  p.head_dim_v = dims.v;
  c.edit(p);
  return NormalizeProblem(p);
}

// The kernel a run names: the Hopper one for multiples of 8 on a Hopper device whose build
// carries sm_90a code, the mma.sync one otherwise.
std::string ExpectedKernel(const Dims& dims) {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  const bool hopper = major == 9 && minor == 0 && dims.qk % 8 == 0 && dims.v % 8 == 0;
  return hopper ? cuda::flash::Sm90AllowList().name : cuda::flash::Sm80AllowList().name;
}

class FlashExpressionCaseTest : public ::testing::TestWithParam<std::tuple<int, DType, int>> {};

TEST_P(FlashExpressionCaseTest, MatchesFloat64Reference) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  const auto& [index, dtype, dims_index] = GetParam();
  const Case c = Cases()[index];
  const Dims& dims = kDims[dims_index];
  const Problem n = Build(c, dtype, dims);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  Backend* backend = Flash();
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(backend->CheckSupported(n).ok()) << backend->CheckSupported(n);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(n, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string kernel = (*w)->KernelName();
  EXPECT_EQ(kernel.rfind(ExpectedKernel(dims), 0), 0u) << kernel;
  EXPECT_NE(kernel.find("(nvrtc)"), std::string::npos) << kernel;
  IterationOptions options;
  ASSERT_TRUE((*w)->BeforeIteration(options).ok());
  absl::StatusOr<double> seconds = (*w)->RunTimed();
  ASSERT_TRUE(seconds.ok()) << seconds.status();
  absl::StatusOr<FloatTensor> out = (*w)->Output();
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectMatches(n, (*w)->Inputs(), *out, c.naive,
                absl::StrCat(c.name, "/", DTypeName(dtype), "/", dims.name, " on ", kernel));
}

INSTANTIATE_TEST_SUITE_P(Cases, FlashExpressionCaseTest,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(Cases().size())),
                                            ::testing::Values(DType::kFloat16, DType::kBFloat16),
                                            ::testing::Range(0, 2)),
                         [](const ::testing::TestParamInfo<std::tuple<int, DType, int>>& info) {
                           return absl::StrCat(Cases()[std::get<0>(info.param)].name, "_",
                                               DTypeName(std::get<1>(info.param)), "_",
                                               kDims[std::get<2>(info.param)].name);
                         });

// A CUDA graph replays the NVRTC kernel like the precompiled ones, and replays give the output of
// a plain launch; a mask_mod's classification is mask preparation, outside the timed region.
TEST(FlashExpressionsTest, GraphReplayAndMaskPreparation) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  for (const Dims& dims : kDims) {
    SCOPED_TRACE(dims.name);
    const Case c = Cases()[8];  // long_document_mask
    ASSERT_EQ(c.name, "long_document_mask");
    const Problem n = Build(c, DType::kBFloat16, dims);
    absl::StatusOr<std::unique_ptr<Workload>> w = Flash()->Prepare(n, 0);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_GT((*w)->MaskPreparationSeconds(), 0);
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
}

// The first Prepare compiles the kernel with the expression (a miss, reported in
// ExpressionCompileSeconds); a second Prepare of the same problem compiles nothing.
TEST(FlashExpressionsTest, SecondPrepareIsACacheHit) {
  SKIP_WITHOUT_DEVICE_OR_NVRTC();
  Problem p = testing::OddGqaProblem();
  p.dtype = DType::kFloat16;
  // Text no other test uses, so the first Prepare below is a miss whatever ran before.
  p.score_mod = "s - 0.0078125 * (q - kv) + 0.00390625 * hkv";
  const Problem n = NormalizeProblem(p);
  cuda::ExpressionModuleCache& cache = cuda::SharedExpressionModuleCache();
  const cuda::ExpressionCacheStats before = cache.Stats();
  absl::StatusOr<std::unique_ptr<Workload>> first = Flash()->Prepare(n, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT((*first)->ExpressionCompileSeconds(), 0);
  const cuda::ExpressionCacheStats mid = cache.Stats();
  EXPECT_EQ(mid.misses, before.misses + 2);  // the per-pair module (aux, classifier), the kernel
  absl::StatusOr<std::unique_ptr<Workload>> second = Flash()->Prepare(n, 0);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->ExpressionCompileSeconds(), 0);
  const cuda::ExpressionCacheStats after = cache.Stats();
  EXPECT_EQ(after.misses, mid.misses);
  EXPECT_EQ(after.hits, mid.hits + 2);
}

}  // namespace
}  // namespace attnbench
