// cpu_reference against the tests' own float64 attention (naive_attention.h) on fresh generated
// inputs with odd sizes (S_q != S_kv, D_qk != D_v, non-power-of-two heads): every layout, mask,
// modifier, dtype, decode cache (paged, int8, int4, SAQ) and layer scope, every output element.
// Plus the backend's contract: refusals, threads, device, memory estimate, registry.
#include "kernels/cpu/cpu_backend.h"

#include <chrono>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_support.h"
#include "kernels/cpu/cpu_kv_source.h"
#include "kernels/reference/check.h"
#include "kernels/registry.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"
#include "tests/kernels/kernel_cases.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::ExpectAllClose;
using testing::NaiveAttention;
using testing::NaiveOptions;

Problem OddProblem() { return testing::OddGqaProblem(); }

IterationOptions NoFlush() {
  IterationOptions o;
  o.flush_cache = false;
  return o;
}

struct CpuRun {
  Problem problem;
  std::unique_ptr<Workload> workload;
  FloatTensor output;
};

CpuRun RunCpu(const Problem& raw, int threads = 2) {
  CpuRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(threads);
  EXPECT_TRUE(backend->CheckSupported(r.problem).ok());
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  EXPECT_TRUE(r.workload->BeforeIteration(NoFlush()).ok());
  absl::StatusOr<double> seconds = r.workload->RunTimed();
  EXPECT_TRUE(seconds.ok() && *seconds > 0);
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  EXPECT_EQ(r.output.dtype, r.problem.output_dtype);
  return r;
}

struct Case {
  std::string name;
  std::function<void(Problem&)> edit;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

void Layout(Problem& p, LayoutKind kind) {
  p.layout = {};
  p.layout.kind = kind;
}
void Window(Problem& p, std::optional<int64_t> left, std::optional<int64_t> right) {
  p.mask.kind = MaskKind::kSlidingWindow;
  p.mask.left_tokens = left;
  p.mask.right_tokens = right;
}
void AllModifiers(Problem& p) {
  p.mask.kind = MaskKind::kCausal;
  p.rope = {true, std::nullopt, std::nullopt};
  p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
  p.softcap = {true, 2.5};
}

std::vector<Case> Cases() {
  std::vector<Case> c;
  // Layouts (§2), causal so masking meets every head map.
  c.push_back({"mha", [](Problem& p) {
                 Layout(p, LayoutKind::kMha);
                 p.layout.num_heads = 3;
               }});
  c.push_back({"mqa", [](Problem& p) {
                 Layout(p, LayoutKind::kMqa);
                 p.layout.num_heads = 6;
               }});
  c.push_back({"gqa", [](Problem& p) { p.mask.kind = MaskKind::kCausal; }});
  c.push_back({"sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSqa);
                 p.layout.baseline_heads = 8;
                 p.layout.num_query_heads = 6;
                 p.layout.num_kv_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"symmetric_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSymmetricSqa);
                 p.layout.baseline_heads = 6;
               }});
  c.push_back({"extreme_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kExtremeSqa);
                 p.layout.baseline_heads = 12;
               }});
  c.push_back({"extreme_sqa_fewer", [](Problem& p) {
                 Layout(p, LayoutKind::kExtremeSqa);
                 p.layout.baseline_heads = 16;
                 p.layout.extreme_query_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"gqkva", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"explicit_map", [](Problem& p) {
                 Layout(p, LayoutKind::kExplicit);
                 p.layout.num_query_heads = 5;
                 p.layout.num_kv_heads = 3;
                 p.layout.pairs = {{4, 0}, {4, 2}, {0, 2}, {2, 1}, {2, 1}};
               }});
  // Masks (§3).
  c.push_back({"none", [](Problem& p) {}});
  c.push_back({"causal_more_queries_than_keys", [](Problem& p) {
                 p.seq_len_q = 53;
                 p.seq_len_kv = 37;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"window", [](Problem& p) { Window(p, 5, 2); }});
  c.push_back({"window_left_only", [](Problem& p) { Window(p, 7, std::nullopt); }});
  c.push_back({"window_causal", [](Problem& p) { Window(p, 20, 0); }});
  c.push_back({"window_right_only", [](Problem& p) { Window(p, std::nullopt, 3); }});
  c.push_back({"block_sparse", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 8;
                 p.mask.kv_block_tokens = 16;
                 p.mask.blocks = {{0, 0}, {0, 3}, {1, 1}, {2, 2}, {4, 0}, {4, 3}};
               }});
  c.push_back({"block_sparse_causal", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 5;
                 p.mask.kv_block_tokens = 7;
                 p.mask.blocks = {{0, 2}, {0, 3}, {1, 0}, {3, 4}, {7, 7}, {7, 1}, {6, 6}};
                 p.mask.intersect_causal = true;
               }});
  c.push_back({"probabilistic", [](Problem& p) {
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 4;
                 p.mask.kv_block_tokens = 6;
                 p.mask.c_coefficient = 0.6;
                 p.mask.alpha = 0.8;
                 p.mask.seed = 31;
               }});
  // Modifiers (§4) and their combinations.
  c.push_back({"rope", [](Problem& p) { p.rope.enabled = true; }});
  c.push_back({"rope_partial", [](Problem& p) { p.rope = {true, 500.0, 16}; }});
  c.push_back({"alibi_geometric", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"alibi_harmonic", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kHarmonic, 0.3};
               }});
  c.push_back({"softcap", [](Problem& p) {
                 p.softcap = {true, 1.5};
                 p.input_scale = 3.0;
               }});
  c.push_back({"scale", [](Problem& p) { p.scale = 0.05; }});
  c.push_back({"rope_alibi", [](Problem& p) {
                 p.rope.enabled = true;
                 p.alibi.enabled = true;
               }});
  c.push_back({"all_modifiers", AllModifiers});
  c.push_back({"all_modifiers_window", [](Problem& p) {
                 AllModifiers(p);
                 Window(p, 9, 0);
                 p.rope.rotary_dims = 24;
               }});
  c.push_back({"all_modifiers_probabilistic", [](Problem& p) {
                 AllModifiers(p);
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 3;
                 p.mask.kv_block_tokens = 5;
                 p.mask.c_coefficient = 0.9;
                 p.mask.alpha = 1.5;
               }});
  // Dtypes: stored inputs and outputs, float32 math.
  for (DType d : {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3}) {
    c.push_back({std::string(DTypeName(d)), [d](Problem& p) { p.dtype = d; }});
    c.push_back({std::string(DTypeName(d)) + "_all_modifiers", [d](Problem& p) {
                   p.dtype = d;
                   AllModifiers(p);
                 }});
  }
  // Longer sequences, where tiles are skipped whole and kept whole.
  c.push_back({"long_window", [](Problem& p) {
                 p.seq_len_q = 300;
                 p.seq_len_kv = 700;
                 p.head_dim_qk = 16;
                 p.head_dim_v = 16;
                 Window(p, 70, 10);
               }});
  c.push_back({"long_causal_rope", [](Problem& p) {
                 p.seq_len_q = p.seq_len_kv = 333;
                 p.head_dim_qk = 24;
                 p.head_dim_v = 8;
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  // Decode (§5): a few queries against a cache, paged through a page table.
  auto decode = [](Problem& p) {
    p.phase = Phase::kDecode;
    p.seq_len_q = 3;
    p.seq_len_kv = 300;
  };
  c.push_back({"decode", [=](Problem& p) { decode(p); }});
  c.push_back({"decode_paged_generated_table", [=](Problem& p) {
                 decode(p);
                 AllModifiers(p);
                 p.kv_cache.paged = true;
                 p.kv_cache.page_size_tokens = 16;
               }});
  c.push_back({"decode_paged_client_table", [=](Problem& p) {
                 decode(p);
                 p.kv_cache.paged = true;
                 p.kv_cache.page_size_tokens = 64;  // 5 pages per sequence, the last ragged
                 p.kv_cache.page_table = {9, 3, 0, 7, 5, 1, 8, 2, 6, 4};
                 p.dtype = DType::kBFloat16;
               }});
  // Layer scope (§6): projections in, core, projection out.
  c.push_back({"layer", [](Problem& p) {
                 p.scope = Scope::kLayer;
                 p.d_model = 48;
                 p.seq_len_kv = p.seq_len_q;
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  c.push_back({"layer_gqkva_bf16", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
                 p.scope = Scope::kLayer;
                 p.d_model = 40;
                 p.seq_len_kv = p.seq_len_q;
                 p.dtype = DType::kBFloat16;
                 p.alibi.enabled = true;
               }});
  return c;
}

class CpuBackendVsNaiveTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBackendVsNaiveTest, EveryElementMatches) {
  Problem p = OddProblem();
  GetParam().edit(p);
  CpuRun r = RunCpu(p);
  ASSERT_NE(r.workload, nullptr);
  const std::vector<double> expected = NaiveAttention(r.problem, r.workload->Inputs());
  // Layer scope stores Q, K, V and O in the dtype on the way; where float32 and float64 sums
  // round an intermediate to different neighbours the effect spreads, so allow that noise.
  const double noise = r.problem.scope == Scope::kLayer && r.problem.dtype != DType::kFloat32
                           ? 3 * testing::UlpRelative(r.problem.dtype)
                           : 2e-5;
  ExpectAllClose(r.output.values, expected, r.output.shape,
                 testing::StoredOutputTolerance(r.problem.output_dtype, noise), GetParam().name);
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuBackendVsNaiveTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(CpuBackendTest, FullyMaskedRowsAreExactZeros) {
  Problem p = OddProblem();
  p.seq_len_q = 53;
  p.seq_len_kv = 37;  // queries 0..15 sit before every key
  p.mask.kind = MaskKind::kCausal;
  p.dtype = DType::kFloat16;
  CpuRun r = RunCpu(p);
  const int64_t row = 6 * 24;  // one query position: 6 heads x D_v
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 53; ++i) {
      const float* o = &r.output.values[(b * 53 + i) * row];
      bool all_zero = true;
      for (int64_t k = 0; k < row; ++k) all_zero = all_zero && o[k] == 0.0f && !std::signbit(o[k]);
      EXPECT_EQ(all_zero, i < 16) << "b " << b << " i " << i;
    }
  }
  // A block-sparse mask that lists no block hides everything.
  Problem empty = OddProblem();
  empty.mask.kind = MaskKind::kBlockSparse;
  empty.mask.query_block_tokens = 4;
  empty.mask.kv_block_tokens = 4;
  CpuRun e = RunCpu(empty);
  for (float v : e.output.values) ASSERT_EQ(v, 0.0f);
}

TEST(CpuBackendTest, QuantizedCachesMatchTheirOwnQuantizationExactly) {
  // Without RoPE the cached keys are the inputs themselves, so the tests' quantization (of the
  // documented recipe) sees exactly what the backend quantized.
  for (const testing::CacheFormatCase& q : testing::QuantizedCacheCases()) {
    for (bool paged : {false, true}) {
      Problem p = OddProblem();
      p.phase = Phase::kDecode;
      p.seq_len_q = 4;
      p.seq_len_kv = 301;
      p.head_dim_v = 23;  // odd: int4 packs a lone last element
      p.mask.kind = MaskKind::kCausal;
      p.alibi.enabled = true;
      p.kv_cache.paged = paged;
      p.kv_cache.page_size_tokens = 32;
      q.edit(p.kv_cache);
      CpuRun r = RunCpu(p);
      ASSERT_NE(r.workload, nullptr);
      const std::string ctx = q.name + (paged ? " paged" : "");
      NaiveOptions quantized;
      quantized.quantize_cache = true;
      ExpectAllClose(r.output.values, NaiveAttention(r.problem, r.workload->Inputs(), quantized),
                     r.output.shape, testing::StoredOutputTolerance(r.problem.dtype), ctx);
      // Against the unquantized truth: within the tolerance the server applies, but not exact.
      const double err =
          testing::RelativeError(r.output.values, NaiveAttention(r.problem, r.workload->Inputs()));
      EXPECT_LT(err, ToleranceFor(r.problem)) << ctx;
      EXPECT_GT(err, 1e-4) << ctx << ": quantization had no effect";
    }
  }
}

TEST(CpuBackendTest, QuantizedCachesWithRopeStayWithinTolerance) {
  for (CacheFormat f : {CacheFormat::kInt8, CacheFormat::kInt4}) {
    for (DType d : {DType::kFloat32, DType::kFloat16}) {
      Problem p = OddProblem();
      p.phase = Phase::kDecode;
      p.seq_len_q = 2;
      p.seq_len_kv = 257;
      p.dtype = d;
      p.rope.enabled = true;
      p.kv_cache.format = f;
      p.kv_cache.paged = true;
      p.kv_cache.page_size_tokens = 16;
      CpuRun r = RunCpu(p);
      ASSERT_NE(r.workload, nullptr);
      const double err =
          testing::RelativeError(r.output.values, NaiveAttention(r.problem, r.workload->Inputs()));
      EXPECT_LT(err, ToleranceFor(r.problem)) << static_cast<int>(f);
    }
  }
}

TEST(CpuBackendTest, PagingIsTransparent) {
  Problem p = OddProblem();
  p.phase = Phase::kDecode;
  p.seq_len_q = 5;
  p.seq_len_kv = 200;
  p.rope.enabled = true;
  const CpuRun plain = RunCpu(p);
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 8;
  const CpuRun paged = RunCpu(p);
  p.kv_cache.page_size_tokens = 7;
  p.seed += 0;  // same inputs, another page size and generated table
  const CpuRun paged7 = RunCpu(p);
  EXPECT_EQ(plain.output.values, paged.output.values);
  EXPECT_EQ(plain.output.values, paged7.output.values);
}

TEST(CpuBackendTest, ThreadCountDoesNotChangeTheResult) {
  Problem p = OddProblem();
  AllModifiers(p);
  p.seq_len_q = 150;
  p.seq_len_kv = 170;
  const CpuRun one = RunCpu(p, 1);
  const CpuRun three = RunCpu(p, 3);
  EXPECT_EQ(one.output.values, three.output.values);
  // And running again gives the same output.
  ASSERT_TRUE(three.workload->RunTimed().ok());
  EXPECT_EQ(three.workload->Output()->values, one.output.values);
}

TEST(CpuBackendTest, InputsAreStoredInTheDtype) {
  Problem p = OddProblem();
  p.dtype = DType::kFloat8E4M3;
  const CpuRun r = RunCpu(p);
  // FP8 (§1b): Q, K, V are e4m3 codes with a scale each; O is bfloat16.
  for (const FloatTensor* t :
       {&r.workload->Inputs().query, &r.workload->Inputs().key, &r.workload->Inputs().value}) {
    EXPECT_EQ(t->dtype, DType::kFloat8E4M3);
    EXPECT_EQ(t->scales.size(), 1u);
    for (float v : t->values) ASSERT_EQ(RoundToDType(v, DType::kFloat8E4M3), v);
  }
  EXPECT_EQ(r.output.dtype, DType::kBFloat16);
  for (float v : r.output.values) ASSERT_EQ(RoundToDType(v, DType::kBFloat16), v);
  EXPECT_EQ(r.output.shape, (std::vector<int64_t>{2, 37, 6, 24}));
}

// PHASE_BACKWARD and its refusals are tested in cpu_backward_test.cc.
TEST(CpuBackendTest, RefusesBadDevicesAndInvalidProblems) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(1);
  Problem p = NormalizeProblem(OddProblem());
  EXPECT_FALSE(backend->Prepare(p, 1).ok());
  Problem invalid = p;
  invalid.batch_size = 0;
  EXPECT_EQ(backend->Prepare(invalid, 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->Output().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*w)->BeforeIteration(IterationOptions()).ok());
  EXPECT_TRUE((*w)->RunTimed().ok());
}

TEST(CpuBackendTest, DescribesItsDeviceAndSupport) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(0);
  EXPECT_EQ(backend->Name(), "cpu_reference");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<DeviceDescription> devices = backend->Devices();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].kind, "cpu");
  EXPECT_FALSE(devices[0].name.empty());
  EXPECT_GT(devices[0].compute_units, 0);
  EXPECT_GT(devices[0].memory_bytes, 0u);
  EXPECT_GT(devices[0].peak_tflops, 0);
  EXPECT_GT(devices[0].peak_gbps, 0);
  const BackendSupport s = backend->Support();
  EXPECT_EQ(s.dtypes.size(), 4u);
  EXPECT_EQ(s.layouts.size(), 8u);
  EXPECT_EQ(s.masks.size(), 5u);
  EXPECT_EQ(s.modifiers.size(), std::size(kAllModifiers));  // built-ins and expressions
  EXPECT_TRUE(s.paged_kv_cache);
  EXPECT_EQ(s.auto_priority, 0);
  EXPECT_EQ(s.phases, (std::vector<Phase>{Phase::kPrefill, Phase::kDecode, Phase::kBackward}));
  // Every phase deterministically (ThreadCountDoesNotChangeTheResult, cpu_backward_test).
  EXPECT_EQ(s.deterministic_phases, s.phases);
}

// Problem::deterministic (MeasurementSettings.deterministic) is refused by name for a phase the
// allow-list does not run deterministically, and for nothing else.
TEST(CpuBackendTest, DeterministicIsAskedOfTheAllowList) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(1);
  BackendSupport support = backend->Support();
  Problem p = NormalizeProblem(OddProblem());
  p.phase = Phase::kBackward;
  p.deterministic = true;
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  EXPECT_TRUE(backend->CheckSupported(p).ok()) << backend->CheckSupported(p);
  support.deterministic_phases = {Phase::kPrefill};
  const absl::Status s = CheckSupport(support, p, "other");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "backend other does not run spec.phase=PHASE_BACKWARD deterministically "
            "(measurement.deterministic; deterministic phases: PHASE_PREFILL)");
  Problem free = p;
  free.deterministic = false;
  EXPECT_TRUE(CheckSupport(support, free, "other").ok());
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  EXPECT_TRUE(CheckSupport(support, prefill, "other").ok());
  support.deterministic_phases.clear();
  EXPECT_NE(CheckSupport(support, prefill, "other").message().find("phases: none"),
            std::string::npos);
}

TEST(CpuBackendTest, EstimatesAtLeastTheTensors) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  Problem p = OddProblem();
  p.seq_len_q = p.seq_len_kv = 4096;
  p.head_dim_qk = 128;
  p.head_dim_v = 128;
  const Problem n = NormalizeProblem(p);
  const uint64_t tensors = 4ull * 2 * 4096 * 128 * (6 + 3 + 3 + 6);
  EXPECT_GE(backend->EstimateBytes(n), tensors);
  EXPECT_LT(backend->EstimateBytes(n), 4 * tensors + (uint64_t{1} << 30));
  Problem decode = n;
  decode.phase = Phase::kDecode;
  decode.seq_len_q = 1;
  decode.kv_cache.format = CacheFormat::kInt8;
  EXPECT_GT(backend->EstimateBytes(decode), 4ull * 2 * 4096 * 3 * 256);  // K, V inputs as floats
  // FP8 holds the codes and what they stand for, both as floats: Q, K, V counted twice.
  Problem fp8 = p;
  fp8.dtype = DType::kFloat8E4M3;
  const uint64_t qkv = 4ull * 2 * 4096 * 128 * (6 + 3 + 3);
  EXPECT_EQ(backend->EstimateBytes(NormalizeProblem(fp8)), backend->EstimateBytes(n) + qkv);
}

TEST(RegistryTest, OffersTheCpuReference) {
  const std::vector<std::unique_ptr<Backend>> backends = CreateBackends(RegistryOptions{1});
  ASSERT_GE(backends.size(), 1u);
  EXPECT_EQ(backends[0]->Name(), kCpuReferenceBackend);
}

}  // namespace
}  // namespace attnbench

namespace attnbench {
namespace {

TEST(PagedKvCacheTest, TokensLiveInThePagesTheTableNames) {
  Problem p = NormalizeProblem(OddProblem());
  p.phase = Phase::kDecode;
  p.seq_len_q = 1;
  p.seq_len_kv = 50;
  p.head_dim_v = 3;
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 8;  // 7 pages per sequence, 14 in all
  p.kv_cache.page_table = {13, 2, 7, 0, 11, 5, 9, 1, 12, 3, 6, 10, 4, 8};
  p.kv_cache.format = CacheFormat::kNative;
  const int hkv = 3;
  std::vector<float> keys(2 * 50 * hkv * 40), values(2 * 50 * hkv * 3);
  for (size_t k = 0; k < keys.size(); ++k) keys[k] = static_cast<float>(k);
  for (size_t k = 0; k < values.size(); ++k) values[k] = -static_cast<float>(k);
  const PagedKvCache cache(p, keys, values, hkv);
  std::vector<float> row(40);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t j = 0; j < 50; ++j) {
      const int64_t slot = p.kv_cache.page_table[b * 7 + j / 8] * 8 + j % 8;
      for (int h = 0; h < hkv; ++h) {
        cache.ReadPhysical(true, slot, CacheFormat::kNative, h, row.data());
        ASSERT_EQ(row[0], keys[((b * 50 + j) * hkv + h) * 40]) << b << " " << j;
        ASSERT_EQ(row[39], keys[((b * 50 + j) * hkv + h) * 40 + 39]);
        cache.ReadPhysical(false, slot, CacheFormat::kNative, h, row.data());
        ASSERT_EQ(row[2], values[((b * 50 + j) * hkv + h) * 3 + 2]);
      }
    }
  }
  // And reading through the table gives the logical order back.
  std::vector<float> kt(40 * 5);
  cache.LoadKeys(1, 2, 20, 25, kt.data(), 5);
  for (int64_t j = 20; j < 25; ++j) {
    for (int d = 0; d < 40; ++d)
      ASSERT_EQ(kt[d * 5 + (j - 20)], keys[((50 + j) * hkv + 2) * 40 + d]);
  }
}

}  // namespace
}  // namespace attnbench
