// The CUDA backends (cuda_flash, cuda_unfused, cuda_reference) against the tests' own float64
// attention (naive_attention.h) and the kernels' oracle (CheckOutput), on fresh generated inputs
// with odd sizes: every layout, mask and modifier, float16 / bfloat16 / float32, padded head dims,
// decode shapes (the cases in tests/kernels/kernel_cases.h). Every output element is held to a
// bound scaled to the dtype and to its row (test_util.h TensorCoreKernelTolerance), and the output
// is poisoned with NaN before the run, so every element must have been written. Plus the
// backends' contract on the device: refusals, out-of-memory as a clean status with the device
// usable afterwards, CUDA-graph replay and warm-cache rotation giving the same output, measured
// ceilings. Skips (GTEST_SKIP) on a machine without a CUDA device.
#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/flash/decode.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/reference/check.h"
#include "tests/kernels/backward_cases.h"
#include "tests/kernels/kernel_cases.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::NaiveAttention;

// Owned by the test binary: measuring the ceilings happens once. cuda_flash's decode kernel is
// switched on in this process (flash/decode.h FlashDecodeEnabled) before anything asks: these
// tests are what switches it on for the server.
const std::vector<std::unique_ptr<Backend>>& Backends() {
  static const auto* const backends = [] {
    cuda::flash::EnableFlashDecodeForTest();
    return new std::vector<std::unique_ptr<Backend>>(MakeCudaBackends());
  }();
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

Problem BaseProblem() { return testing::GpuBaseProblem(); }

struct Ran {
  Problem problem;
  std::unique_ptr<Workload> workload;
  FloatTensor output;
};

// Prepares and runs once with `options`; the problem must be supported.
Ran RunOnce(Backend& backend, const Problem& raw, const IterationOptions& options, int runs = 1) {
  Ran r;
  r.problem = NormalizeProblem(raw);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend.Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  for (int i = 0; i < runs; ++i) {
    EXPECT_TRUE(r.workload->BeforeIteration(options).ok());
    absl::StatusOr<double> seconds = r.workload->RunTimed();
    EXPECT_TRUE(seconds.ok()) << seconds.status();
    if (seconds.ok()) {
      EXPECT_GT(*seconds, 0);
    }
  }
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  return r;
}

// Every element against the naive float64 attention under the GPU kernels' per-element bound
// (test_util.h TensorCoreKernelTolerance: scaled by the dtype and by the row's largest value), so
// a handful of wrong elements fails where a global relative L2 error would average them away;
// a NaN left by the poison (an element never written) fails too. Then the kernels' own oracle
// must agree.
void ExpectMatchesReference(const Ran& r, const std::string& context) {
  const std::vector<double> ref = NaiveAttention(r.problem, r.workload->Inputs());
  ASSERT_EQ(r.output.values.size(), ref.size()) << context;
  const testing::Tolerance tolerance = r.problem.scope == Scope::kLayer
                                           ? testing::LayerKernelTolerance(r.problem.dtype)
                                           : testing::TensorCoreKernelTolerance(r.problem.dtype);
  testing::ExpectAllClose(r.output.values, ref, r.output.shape, tolerance, context);
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report =
      CheckOutput(r.problem, r.workload->Inputs(), r.output, full);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << context << ": oracle relative error " << report->relative_error;
}

// FP8 (§1b) on cuda_reference: the codes times their scales as float32, O rounded to bfloat16.
// Odd sizes, per-head given scales that differ by head, RoPE and a causal mask; every element
// against the naive float64 attention of what the codes stand for, then the oracle's split.
TEST(CudaReferenceTest, RunsFloat8OnItsFloat32Path) {
  SKIP_WITHOUT_DEVICE();
  Problem p = BaseProblem();
  p.seq_len_q = 77;
  p.seq_len_kv = 93;
  p.dtype = DType::kFloat8E4M3;
  p.mask.kind = MaskKind::kCausal;
  p.rope.enabled = true;
  p.input_scale = 1.5;
  p.float8.granularity = ScaleGranularity::kHead;
  const absl::StatusOr<HeadConfig> heads = ResolveHeads(p.layout);
  ASSERT_TRUE(heads.ok());
  for (int h = 0; h < heads->num_query_heads; ++h) {
    p.float8.query_scales.push_back(0.01f + 0.003f * h);
  }
  for (int h = 0; h < heads->num_kv_heads; ++h) {
    p.float8.key_scales.push_back(0.012f - 0.001f * h);
    p.float8.value_scales.push_back(0.008f + 0.002f * h);
  }
  Backend* backend = Find(kCudaReferenceBackend);
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(ValidateProblem(NormalizeProblem(p)).ok()) << ValidateProblem(NormalizeProblem(p));
  ASSERT_TRUE(backend->CheckSupported(NormalizeProblem(p)).ok());
  const Ran r = RunOnce(*backend, p, IterationOptions{});
  ASSERT_NE(r.workload, nullptr);
  EXPECT_EQ(r.output.dtype, DType::kBFloat16);
  EXPECT_EQ(r.workload->Inputs().key.scales, p.float8.key_scales);
  const std::vector<double> ref = NaiveAttention(r.problem, r.workload->Inputs());
  testing::ExpectAllClose(r.output.values, ref, r.output.shape,
                          testing::StoredOutputTolerance(DType::kBFloat16, 1e-4), "fp8");
  CheckOptions full;
  full.full = true;
  absl::StatusOr<CorrectnessReport> report =
      CheckOutput(r.problem, r.workload->Inputs(), r.output, full);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << report->relative_error;
  ASSERT_TRUE(report->quantization.has_value());
  EXPECT_TRUE(report->quantization->kernel_passed);
  EXPECT_LT(report->quantization->kernel_relative_error, 4e-3);
}

class CudaBackendCaseTest : public ::testing::TestWithParam<std::tuple<std::string, DType, int>> {};

TEST_P(CudaBackendCaseTest, MatchesFloat64Reference) {
  SKIP_WITHOUT_DEVICE();
  const auto& [name, dtype, index] = GetParam();
  Backend* backend = Find(name);
  ASSERT_NE(backend, nullptr);
  const testing::KernelCase c = testing::GpuKernelCases()[index];
  const Problem n = NormalizeProblem(testing::GpuCaseProblem(index, dtype));
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  if (absl::Status s = backend->CheckSupported(n); !s.ok()) {
    // The only refusal among these cases: the fused kernel stores float16 and bfloat16 alone.
    EXPECT_EQ(name, kCudaFlashBackend) << s;
    EXPECT_EQ(dtype, DType::kFloat32) << s;
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    return;
  }
  const Ran r = RunOnce(*backend, n, IterationOptions{});
  const std::string kernel = r.workload != nullptr ? r.workload->KernelName() : "";
  // On an H100 every case here with 16-bit storage and head dims (and rotary dims) that are
  // multiples of 8 is the Hopper kernel's to run: a fallback would be timed on the slow kernel.
  if (name == kCudaFlashBackend && UsesFlashDecode(n)) {
    EXPECT_EQ(kernel.rfind("decode split-kv", 0), 0u) << c.name << ": " << kernel;
  } else if (name == kCudaFlashBackend && backend->Devices().front().compute_capability == "9.0") {
    const bool hopper_case =
        n.head_dim_qk % 8 == 0 && *n.head_dim_v % 8 == 0 &&
        (!n.rope.enabled || n.rope.rotary_dims.value_or(n.head_dim_qk) % 8 == 0);
    EXPECT_EQ(kernel.rfind("hopper wgmma+tma", 0) == 0, hopper_case) << c.name << ": " << kernel;
  }
  ExpectMatchesReference(r,
                         absl::StrCat(name, "/", DTypeName(dtype), "/", c.name, " [", kernel, "]"));
}

// SCOPE_LAYER on every backend: the cuBLAS projections around each core, every element of Y
// against the float64 layer (X, the weights, the core and O W_o in double), for layouts whose
// input projections batch all three (MHA), K and V (GQA) or none (D_qk != D_v), causal and RoPE,
// odd token counts and d_model. Each iteration's split lies inside it, and a replayed graph
// gives the same Y and no split.
TEST(CudaBackendsTest, LayerScopeMatchesReferenceAndSplitsItsTime) {
  SKIP_WITHOUT_DEVICE();
  struct LayerCase {
    const char* name;
    void (*edit)(Problem&);
  };
  const LayerCase cases[] = {
      {"mha_causal_rope",
       [](Problem& p) {
         testing::SetMha(p, 4);
         p.mask.kind = MaskKind::kCausal;
         p.rope.enabled = true;
       }},
      {"gqa_none", [](Problem&) {}},
      {"sqa_192_128",
       [](Problem& p) {
         testing::SetSqa(p, 8, 4, 2);
         p.head_dim_qk = 192;
         p.head_dim_v = 128;
         p.mask.kind = MaskKind::kCausal;
       }},
  };
  for (const auto& b : Backends()) {
    for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
      for (const LayerCase& c : cases) {
        Problem p = BaseProblem();
        p.seq_len_q = p.seq_len_kv = 77;
        c.edit(p);
        p.scope = Scope::kLayer;
        p.d_model = 200;
        p.dtype = dtype;
        p.seed = 4242 + static_cast<int>(dtype);
        const Problem n = NormalizeProblem(p);
        const std::string context = absl::StrCat(b->Name(), "/", DTypeName(dtype), "/", c.name);
        ASSERT_TRUE(ValidateProblem(n).ok()) << context << ": " << ValidateProblem(n);
        if (absl::Status s = b->CheckSupported(n); !s.ok()) {
          EXPECT_EQ(b->Name(), kCudaFlashBackend) << context << ": " << s;
          EXPECT_EQ(dtype, DType::kFloat32) << context << ": " << s;
          continue;
        }
        IterationOptions options;
        options.flush_cache = false;
        const Ran r = RunOnce(*b, n, options, 2);
        ASSERT_NE(r.workload, nullptr) << context;
        EXPECT_EQ(r.output.shape, (std::vector<int64_t>{2, 77, 200})) << context;
        ExpectMatchesReference(r, context);
        const std::optional<LayerSplit> split = r.workload->LastLayerSplit();
        ASSERT_TRUE(split.has_value()) << context;
        EXPECT_GT(split->projections_seconds, 0) << context;
        EXPECT_GT(split->core_seconds, 0) << context;

        options.use_cuda_graph = true;
        const Ran g = RunOnce(*b, n, options, 2);
        ASSERT_NE(g.workload, nullptr) << context;
        EXPECT_EQ(g.output.values, r.output.values) << context << " (graph replay)";
        EXPECT_FALSE(g.workload->LastLayerSplit().has_value()) << context;
      }
    }
  }
}

// cuda_flash says which of its kernels ran: on a compute capability 9.0 device the Hopper
// kernel, with its tile and policies, for whatever it covers (RoPE included), the mma.sync kernel
// otherwise and for what Hopper refuses (here: a head dim that is not a multiple of 8).
TEST(CudaBackendsTest, FlashNamesTheKernelThatRan) {
  SKIP_WITHOUT_DEVICE();
  Backend* flash = Find(kCudaFlashBackend);
  ASSERT_NE(flash, nullptr);
  const bool hopper = flash->Devices().front().compute_capability == "9.0";
  Problem plain = BaseProblem();
  plain.head_dim_qk = 128;
  plain.mask.kind = MaskKind::kCausal;
  Problem roped = plain;
  roped.rope.enabled = true;
  Problem odd = plain;
  odd.head_dim_qk = 100;
  const Ran a = RunOnce(*flash, plain, IterationOptions{});
  const Ran b = RunOnce(*flash, roped, IterationOptions{});
  const Ran c = RunOnce(*flash, odd, IterationOptions{});
  ASSERT_NE(a.workload, nullptr);
  ASSERT_NE(b.workload, nullptr);
  ASSERT_NE(c.workload, nullptr);
  EXPECT_EQ(a.workload->KernelName(), hopper ? "hopper wgmma+tma D=128/128 Br=128 Bc=128 stages=2"
                                             : "mma.sync D=128/128 (common-case build)");
  EXPECT_EQ(b.workload->KernelName(),
            hopper ? "hopper wgmma+tma D=128/128 Br=128 Bc=128 stages=2 +rope"
                   : "mma.sync D=128/128 (general build)");
  // D = 100: rows are not 16-byte aligned, so neither TMA nor cp.async: the general build.
  EXPECT_EQ(c.workload->KernelName(), "mma.sync D=128/128 (general build)");
  ExpectMatchesReference(a, a.workload->KernelName());
  ExpectMatchesReference(b, b.workload->KernelName());
  ExpectMatchesReference(c, c.workload->KernelName());
}

INSTANTIATE_TEST_SUITE_P(
    AllCases, CudaBackendCaseTest,
    ::testing::Combine(::testing::Values(kCudaFlashBackend, kCudaUnfusedBackend,
                                         kCudaReferenceBackend),
                       ::testing::Values(DType::kBFloat16, DType::kFloat16, DType::kFloat32),
                       ::testing::Range(0, static_cast<int>(testing::GpuKernelCases().size()))),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param), "_", DTypeName(std::get<1>(info.param)), "_",
                          testing::GpuKernelCases()[std::get<2>(info.param)].name);
    });

TEST(CudaBackendsTest, RegisteredWithMeasuredCeilings) {
  SKIP_WITHOUT_DEVICE();
  ASSERT_EQ(Backends().size(), 3u);
  for (const auto& b : Backends()) {
    ASSERT_FALSE(b->Devices().empty()) << b->Name();
    const DeviceDescription d = b->Devices().front();
    EXPECT_EQ(d.kind, "cuda");
    EXPECT_GT(d.compute_units, 0);
    EXPECT_GT(d.peak_tflops, 1) << "cuBLAS GEMM ceiling not measured";
    EXPECT_GT(d.peak_gbps, 10) << "copy ceiling not measured";
    EXPECT_TRUE(b->Support().cuda_graphs);
  }
  EXPECT_GT(Find(kCudaFlashBackend)->Support().auto_priority,
            Find(kCudaUnfusedBackend)->Support().auto_priority);
}

TEST(CudaBackendsTest, RefusesWhatNoKernelRuns) {
  SKIP_WITHOUT_DEVICE();
  // What every CUDA backend refuses; PHASE_BACKWARD cuda_flash where its backward is switched off
  // (flash/support.h FlashBackwardEnabled; cuda_backward_test.cc runs the backward).
  std::vector<std::pair<std::string, std::function<void(Problem&)>>> refusals = {
      {"DTYPE_FLOAT8_E4M3", [](Problem& p) { p.dtype = DType::kFloat8E4M3; }},
      {"paged",  // cuda_unfused only
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.seq_len_q = 1;
         p.kv_cache.paged = true;
         p.kv_cache.page_size_tokens = 16;
       }},
  };
  for (const auto& b : Backends()) {
    auto all = refusals;
    // cuda_reference runs FP8 on its float32 path (CudaReferenceTest.RunsFloat8OnItsFloat32Path).
    if (b->Name() == kCudaReferenceBackend) all.erase(all.begin());
    if (b->Name() == kCudaFlashBackend && !cuda::flash::FlashBackwardEnabled()) {
      all.emplace_back("PHASE_BACKWARD", [](Problem& p) { p.phase = Phase::kBackward; });
    }
    // cuda_reference and cuda_flash read paged and quantized decode caches
    // (CudaReferenceDecodeCacheTest, CudaFlashDecodeTest).
    if (b->Name() != kCudaUnfusedBackend) {
      all.erase(
          std::remove_if(all.begin(), all.end(), [](const auto& r) { return r.first == "paged"; }),
          all.end());
    }
    for (const auto& [what, edit] : all) {
      Problem p = BaseProblem();
      edit(p);
      const Problem n = NormalizeProblem(p);
      ASSERT_TRUE(ValidateProblem(n).ok()) << what << ": " << ValidateProblem(n);
      const absl::Status s = b->CheckSupported(n);
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << b->Name() << " " << what;
      EXPECT_NE(std::string(s.message()).find(what), std::string::npos) << s;
      EXPECT_EQ(b->Prepare(n, 0).status().code(), absl::StatusCode::kFailedPrecondition);
    }
  }
  Problem wide = BaseProblem();
  wide.head_dim_qk = 320;
  EXPECT_EQ(Find(kCudaFlashBackend)->CheckSupported(NormalizeProblem(wide)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Find(kCudaFlashBackend)->Prepare(BaseProblem(), 7).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// cuda_reference reads the decode cache as stored (kernels/spec/kv_cache_store.h): through the
// page table, int8 / int4 dequantized per (token, head) scale, SAQ bands by age. Without RoPE the
// cached keys are the inputs, so the tests' own quantization of the documented recipe gives the
// exact expectation; with RoPE the result must stay within the server's tolerance of the
// unquantized truth, and quantization must show (not silently read a native copy).
TEST(CudaReferenceDecodeCacheTest, MatchesTheQuantizedCacheElementByElement) {
  SKIP_WITHOUT_DEVICE();
  Backend* reference = Find(kCudaReferenceBackend);
  ASSERT_NE(reference, nullptr);
  std::vector<testing::CacheFormatCase> formats = testing::QuantizedCacheCases();
  formats.insert(formats.begin(), {"native", [](KvCache& c) { c.format = CacheFormat::kNative; }});
  for (const auto& [name, edit] : formats) {
    for (bool paged : {false, true}) {
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        for (bool rope : {false, true}) {
          Problem p = BaseProblem();
          p.dtype = dtype;
          p.phase = Phase::kDecode;
          p.seq_len_q = 3;
          p.seq_len_kv = 301;
          p.head_dim_qk = 40;
          p.head_dim_v = 23;  // odd: int4 packs a lone last element
          p.mask.kind = MaskKind::kCausal;
          p.alibi.enabled = true;
          p.rope.enabled = rope;
          p.kv_cache.paged = paged;
          p.kv_cache.page_size_tokens = 32;
          edit(p.kv_cache);
          const std::string ctx =
              absl::StrCat(name, paged ? " paged " : " ", DTypeName(dtype), rope ? " rope" : "");
          const Ran r = RunOnce(*reference, p, IterationOptions{});
          ASSERT_NE(r.workload, nullptr) << ctx;
          const std::vector<double> truth = NaiveAttention(r.problem, r.workload->Inputs());
          const double err = testing::RelativeError(r.output.values, truth);
          EXPECT_LT(err, ToleranceFor(r.problem)) << ctx;
          CheckOptions full;
          full.full = true;
          absl::StatusOr<CorrectnessReport> report =
              CheckOutput(r.problem, r.workload->Inputs(), r.output, full);
          ASSERT_TRUE(report.ok()) << report.status();
          EXPECT_TRUE(report->passed) << ctx << ": " << report->relative_error;
          if (rope) continue;
          testing::NaiveOptions quantized;
          quantized.quantize_cache = true;
          testing::ExpectAllClose(r.output.values,
                                  NaiveAttention(r.problem, r.workload->Inputs(), quantized),
                                  r.output.shape, testing::TensorCoreKernelTolerance(dtype), ctx);
          if (name != "native") {
            EXPECT_GT(err, 1e-4) << ctx << ": quantization had no effect";
          }
        }
      }
    }
  }
}

// cuda_flash's decode kernel (flash/decode.h) on every cache kind: native (contiguous or paged),
// int8, int4 and SAQ bands. Each run is held, element by element, to the float64 attention over
// the cache as stored (the tests' own quantization of the documented recipe; without RoPE, where
// the cached keys are the inputs), and to the server's oracle, whose kernel error is judged by the
// dtype's tolerance alone. The shapes take one and many splits, several row tiles of one KV head
// (MQA, S_q 64), an uneven explicit head map, every head dim of the allow-list, every mask kind
// and modifier; a CUDA graph replays to the same bits.
TEST(CudaFlashDecodeTest, EveryCacheKindMatchesTheCacheAsStored) {
  SKIP_WITHOUT_DEVICE();
  Backend* flash = Find(kCudaFlashBackend);
  ASSERT_NE(flash, nullptr);
  struct DecodeShape {
    const char* name;
    void (*edit)(Problem&);
  };
  const DecodeShape shapes[] = {
      {"gqa8/2_d64_q1_causal",
       [](Problem& p) {
         p.layout.num_query_heads = 8;  // GQA 8/2
         p.seq_len_q = 1;
         p.seq_len_kv = 1000;
         p.mask.kind = MaskKind::kCausal;
       }},
      {"mha4_d128_q4_window_alibi_softcap",
       [](Problem& p) {
         testing::SetMha(p, 4);
         p.head_dim_qk = 128;
         p.seq_len_q = 4;
         p.seq_len_kv = 2777;
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = 700;
         p.mask.right_tokens = 0;
         p.alibi.enabled = true;
         p.softcap = {true, 20.0};
       }},
      {"mqa8_d32_q5_causal",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kMqa;
         p.layout.num_heads = 8;
         p.head_dim_qk = 32;
         p.seq_len_q = 5;  // 40 rows of the one KV head: three row tiles
         p.seq_len_kv = 301;
         p.mask.kind = MaskKind::kCausal;
       }},
      {"gqa4/2_d256_q2_long",
       [](Problem& p) {
         p.layout.num_query_heads = 4;  // GQA 4/2
         p.head_dim_qk = 256;
         p.seq_len_q = 2;
         p.seq_len_kv = 9001;
       }},
      {"explicit_uneven_q3_block_sparse",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kExplicit;
         p.layout.num_query_heads = 5;
         p.layout.num_kv_heads = 3;
         p.layout.pairs = {{4, 0}, {4, 2}, {0, 2}, {2, 1}, {2, 1}};
         p.seq_len_q = 3;
         p.seq_len_kv = 500;
         p.mask.kind = MaskKind::kBlockSparse;
         p.mask.query_block_tokens = 2;
         p.mask.kv_block_tokens = 64;
         p.mask.blocks = {{0, 0}, {0, 3}, {1, 1}, {1, 7}, {0, 7}};
         p.mask.intersect_causal = true;
       }},
      {"mha2_d64_q64",
       [](Problem& p) {
         testing::SetMha(p, 2);
         p.seq_len_q = 64;  // 64 rows per KV head: four row tiles
         p.seq_len_kv = 200;
         p.mask.kind = MaskKind::kCausal;
       }},
  };
  std::vector<testing::CacheFormatCase> formats = testing::QuantizedCacheCases();
  formats.insert(formats.begin(), {"native", [](KvCache& c) { c.format = CacheFormat::kNative; }});
  int seed = 700;
  for (const DecodeShape& shape : shapes) {
    for (const auto& [format, edit] : formats) {
      for (bool paged : {false, true}) {
        for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
          for (bool rope : {false, true}) {
            Problem p = BaseProblem();
            shape.edit(p);
            p.phase = Phase::kDecode;
            p.dtype = dtype;
            p.rope.enabled = rope;
            p.kv_cache.paged = paged;
            p.kv_cache.page_size_tokens = dtype == DType::kBFloat16 ? 16 : 7;
            edit(p.kv_cache);
            p.seed = ++seed;
            const std::string ctx = absl::StrCat(shape.name, " ", format, paged ? " paged " : " ",
                                                 DTypeName(dtype), rope ? " rope" : "");
            const Problem n = NormalizeProblem(p);
            ASSERT_TRUE(ValidateProblem(n).ok()) << ctx << ": " << ValidateProblem(n);
            ASSERT_TRUE(UsesFlashDecode(n)) << ctx;
            const Ran r = RunOnce(*flash, n, IterationOptions{});
            ASSERT_NE(r.workload, nullptr) << ctx;
            EXPECT_EQ(r.workload->KernelName().rfind("decode split-kv", 0), 0u)
                << ctx << ": " << r.workload->KernelName();
            const std::string where = ctx + " [" + r.workload->KernelName() + "]";
            CheckOptions full;
            full.full = true;
            absl::StatusOr<CorrectnessReport> report =
                CheckOutput(r.problem, r.workload->Inputs(), r.output, full);
            ASSERT_TRUE(report.ok()) << report.status();
            EXPECT_TRUE(report->passed) << where << ": " << report->relative_error;
            if (report->quantization.has_value()) {
              EXPECT_TRUE(report->quantization->kernel_passed)
                  << where << ": " << report->quantization->kernel_relative_error;
            }
            if (rope) continue;
            testing::NaiveOptions stored;
            stored.quantize_cache = true;
            testing::ExpectAllClose(
                r.output.values, NaiveAttention(r.problem, r.workload->Inputs(), stored),
                r.output.shape, testing::TensorCoreKernelTolerance(dtype), where);
          }
        }
      }
    }
  }
  // A graph replays the decode kernel and its combine to the same output.
  Problem p = BaseProblem();
  shapes[3].edit(p);
  p.phase = Phase::kDecode;
  p.kv_cache.format = CacheFormat::kInt4;
  const Ran plain = RunOnce(*flash, p, IterationOptions{});
  IterationOptions graph;
  graph.use_cuda_graph = true;
  const Ran replayed = RunOnce(*flash, p, graph, 3);
  ASSERT_NE(replayed.workload, nullptr);
  EXPECT_NE(replayed.workload->KernelName().find("splits="), std::string::npos);
  EXPECT_EQ(plain.output.values, replayed.output.values);
}

TEST(CudaBackendsTest, OutOfMemoryIsResourceExhaustedAndTheDeviceStaysUsable) {
  SKIP_WITHOUT_DEVICE();
  Backend* flash = Find(kCudaFlashBackend);
  const DeviceDescription d = flash->Devices().front();
  // The estimate a server compares with its limit covers what Prepare would allocate.
  Problem huge = BaseProblem();
  huge.layout.num_query_heads = 64;
  huge.layout.num_kv_heads = 1;
  huge.head_dim_qk = 128;
  huge.seq_len_q = huge.seq_len_kv = 1 << 20;
  huge.batch_size = static_cast<int64_t>(d.memory_bytes / (2ull * 64 * 128 * (1 << 20))) + 1;
  const Problem n = NormalizeProblem(huge);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  EXPECT_GT(flash->EstimateBytes(n), d.memory_bytes);
  // An allocation the device cannot satisfy, through the path every Prepare allocates with
  // (inputs that large cannot be generated on the host first).
  absl::StatusOr<cuda::DeviceBuffer> too_big =
      cuda::DeviceBuffer::Allocate(d.memory_bytes + (1ull << 30), "the test's buffer");
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted) << too_big.status();
  EXPECT_NE(std::string(too_big.status().message()).find("the test's buffer"), std::string::npos);
  // The next request runs and is right.
  const Ran r = RunOnce(*flash, NormalizeProblem(BaseProblem()), IterationOptions{});
  ExpectMatchesReference(r, "after out-of-memory");
}

TEST(CudaBackendsTest, GraphReplayAndWarmRotationComputeTheSameOutput) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& b : Backends()) {
    Problem p = BaseProblem();
    p.mask.kind = MaskKind::kCausal;
    p.seed = 99;
    const Problem n = NormalizeProblem(p);
    const Ran plain = RunOnce(*b, n, IterationOptions{});
    IterationOptions graph;
    graph.use_cuda_graph = true;
    const Ran replayed = RunOnce(*b, n, graph, 3);
    IterationOptions warm;
    warm.flush_cache = false;
    const Ran rotated = RunOnce(*b, n, warm, 5);
    ExpectMatchesReference(plain, b->Name() + " plain");
    EXPECT_EQ(plain.output.values, replayed.output.values) << b->Name() << " graph replay";
    EXPECT_EQ(plain.output.values, rotated.output.values) << b->Name() << " warm rotation";
  }
}

TEST(CudaBackendsTest, LongCausalFlashMatchesCudaReference) {
  SKIP_WITHOUT_DEVICE();
  // Sizes where the CPU oracle would be slow: the reference kernel checks the fused one, on every
  // element, with whole tiles skipped and kept.
  Problem p = BaseProblem();
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 4099;
  p.head_dim_qk = 128;
  p.mask.kind = MaskKind::kCausal;
  p.seed = 4242;
  const Problem n = NormalizeProblem(p);
  const Ran flash = RunOnce(*Find(kCudaFlashBackend), n, IterationOptions{});
  const Ran reference = RunOnce(*Find(kCudaReferenceBackend), n, IterationOptions{});
  ASSERT_EQ(flash.output.values.size(), reference.output.values.size());
  // Every element under the kernels' bound, widened by the reference's own rounding to the dtype
  // (its output is stored in bfloat16 too: u more relative, and its row maximum as much off).
  const std::vector<double> ref(reference.output.values.begin(), reference.output.values.end());
  testing::Tolerance tol = testing::TensorCoreKernelTolerance(n.dtype);
  tol.rtol += 2 * testing::UnitRoundoff(n.dtype);
  testing::ExpectAllClose(flash.output.values, ref, flash.output.shape, tol,
                          "cuda_flash against cuda_reference, S = 4099 causal");
}

}  // namespace
}  // namespace attnbench
