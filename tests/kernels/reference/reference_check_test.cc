// The float64 oracle (reference64) against the tests' independent naive attention, and
// CheckOutput: passing and failing outputs, NaN (in the oracle's scores, and non-finite output
// elements outside the sampled rows), all-masked references, tolerances, the seeded sampling
// of rows, and a quantized decode cache long enough that the check reads it back on several
// threads.
#include <cmath>
#include <limits>
#include <memory>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/check.h"
#include "kernels/reference/reference64.h"
#include "kernels/spec/inputs.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/kernel_cases.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/non_finite_util.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

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
  p.seed = 5;
  return p;
}

// Compares every row of the oracle with the naive output (same storage convention).
void ExpectOracleMatchesNaive(const Problem& raw, const std::string& context) {
  const Problem p = NormalizeProblem(raw);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  absl::StatusOr<Reference64> oracle = Reference64::Create(p, *in);
  ASSERT_TRUE(oracle.ok()) << oracle.status();
  const std::vector<double> naive = testing::NaiveAttention(p, *in);
  const ProblemShapes& s = oracle->shapes();
  double rms = 0;
  for (double v : naive) rms += v * v;
  rms = std::sqrt(rms / naive.size());
  for (int64_t row = 0; row < s.rows_total; ++row) {
    const std::vector<double> ref = oracle->Row(row);
    int64_t offset;
    if (s.layer) {
      offset = row * s.d_model;
    } else {
      const int64_t i = row % s.seq_q, bh = row / s.seq_q;
      const int64_t heads = s.heads.num_output_heads;
      offset = (((bh / heads) * s.seq_q + i) * heads + bh % heads) * s.dim_v;
    }
    for (size_t d = 0; d < ref.size(); ++d) {
      ASSERT_NEAR(ref[d], naive[offset + d], 1e-9 * rms + 1e-12)
          << context << " row " << row << " element " << d;
    }
  }
}

TEST(Reference64Test, MatchesNaiveOnEveryVariant) {
  ExpectOracleMatchesNaive(Odd(), "gqkva none");
  Problem p = Odd();
  p.mask.kind = MaskKind::kCausal;
  p.rope = {true, 300.0, 8};
  p.alibi.enabled = true;
  p.softcap = {true, 2.0};
  ExpectOracleMatchesNaive(p, "all modifiers");
  p.seq_len_q = 31;
  p.seq_len_kv = 19;  // rows before every key: zeros in both
  ExpectOracleMatchesNaive(p, "more queries than keys");
  Problem w = Odd();
  w.layout = {};
  w.layout.kind = LayoutKind::kExplicit;
  w.layout.num_query_heads = 3;
  w.layout.num_kv_heads = 2;
  w.layout.pairs = {{2, 1}, {0, 1}, {2, 0}};
  w.mask.kind = MaskKind::kSlidingWindow;
  w.mask.left_tokens = 4;
  w.mask.right_tokens = 1;
  w.alibi = {true, AlibiSchedule::kHarmonic, 0.7};
  ExpectOracleMatchesNaive(w, "explicit window harmonic");
  Problem pr = Odd();
  pr.mask.kind = MaskKind::kProbabilisticBlockSparse;
  pr.mask.query_block_tokens = 3;
  pr.mask.kv_block_tokens = 4;
  pr.mask.c_coefficient = 0.5;
  pr.mask.alpha = 1.0;
  pr.mask.seed = 8;
  ExpectOracleMatchesNaive(pr, "probabilistic");
  Problem bs = Odd();
  bs.mask.kind = MaskKind::kBlockSparse;
  bs.mask.query_block_tokens = 4;
  bs.mask.kv_block_tokens = 5;
  bs.mask.blocks = {{0, 0}, {1, 5}, {4, 2}};
  ExpectOracleMatchesNaive(bs, "block sparse");
  Problem layer = Odd();
  layer.scope = Scope::kLayer;
  layer.d_model = 20;
  layer.seq_len_kv = layer.seq_len_q;
  layer.mask.kind = MaskKind::kCausal;
  layer.rope.enabled = true;
  ExpectOracleMatchesNaive(layer, "layer");
  Problem decode = Odd();
  decode.phase = Phase::kDecode;
  decode.seq_len_q = 2;
  decode.dtype = DType::kBFloat16;
  decode.kv_cache.format = CacheFormat::kInt4;  // the oracle ignores quantization
  ExpectOracleMatchesNaive(decode, "decode");
}

// What made a NaN in Q vanish: a max that skips NaN takes a row whose scores are all NaN for a
// fully masked one and writes zeros. The oracle must give NaN there, so such an output fails.
TEST(Reference64Test, NaNScoreMakesTheRowNaNNotMasked) {
  const Problem p = NormalizeProblem(testing::SmallProblem());  // [2, 16, 4, 8], MHA
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  // Past validation (which refuses it), as a kernel bug or overflow could produce it.
  in->query.values[testing::FlatIndex(in->query.shape, 1, 3, 2, 5)] =
      std::numeric_limits<float>::quiet_NaN();
  absl::StatusOr<Reference64> oracle = Reference64::Create(p, *in);
  ASSERT_TRUE(oracle.ok());
  const int64_t nan_row = (1 * 4 + 2) * 16 + 3;  // (b * H + h) * S_q + i
  FloatTensor zeros_for_nan;  // the oracle's output, with the NaN row written as masked
  zeros_for_nan.dtype = p.dtype;
  zeros_for_nan.shape = oracle->shapes().output;
  zeros_for_nan.values.resize(NumElements(zeros_for_nan.shape));
  for (int64_t row = 0; row < oracle->shapes().rows_total; ++row) {
    const std::vector<double> ref = oracle->Row(row);
    const int64_t b = row / 64, h = (row / 16) % 4, i = row % 16;
    for (int d = 0; d < 8; ++d) {
      EXPECT_EQ(std::isnan(ref[d]), row == nan_row) << "row " << row << " element " << d;
      zeros_for_nan.values[((b * 16 + i) * 4 + h) * 8 + d] =
          row == nan_row ? 0.0f : static_cast<float>(ref[d]);
    }
  }
  CheckOptions full;
  full.full = true;
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(p, *in, zeros_for_nan, full);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->non_finite_elements, 0);
  EXPECT_FALSE(r->passed);
  EXPECT_TRUE(std::isnan(r->relative_error));
}

struct Checked {
  Problem problem;
  AttentionInputs inputs;
  FloatTensor output;
};

Checked RunAndKeep(const Problem& raw) {
  Checked c;
  c.problem = NormalizeProblem(raw);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  auto w = backend->Prepare(c.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE((*w)->RunTimed().ok());
  c.inputs = (*w)->Inputs();
  c.output = *(*w)->Output();
  return c;
}

TEST(CheckOutputTest, BackendOutputPassesEveryRow) {
  Problem p = Odd();
  p.mask.kind = MaskKind::kCausal;
  p.dtype = DType::kFloat16;
  const Checked c = RunAndKeep(p);
  CheckOptions full;
  full.full = true;
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, full);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows_total, 2 * 6 * 19);
  EXPECT_EQ(r->rows_checked, r->rows_total);
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->tolerance, 5e-3);
  EXPECT_GT(r->relative_error, 0);  // fp16 output rounding is visible
  EXPECT_LT(r->relative_error, 1e-3);
  EXPECT_GT(r->max_abs_error, 0);
}

TEST(CheckOutputTest, FailsOnWrongValuesAndNaN) {
  const Checked c = RunAndKeep(Odd());
  CheckOptions full;
  full.full = true;
  FloatTensor wrong = c.output;
  for (size_t k = 0; k < wrong.values.size(); k += 7) wrong.values[k] += 0.05f;
  absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, wrong, full);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->passed);
  EXPECT_NEAR(r->max_abs_error, 0.05, 1e-4);
  FloatTensor nan = c.output;
  nan.values[3] = std::numeric_limits<float>::quiet_NaN();
  r = CheckOutput(c.problem, c.inputs, nan, full);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->passed);
  EXPECT_TRUE(std::isnan(r->relative_error));
  FloatTensor shape = c.output;
  shape.shape[0] = 3;
  EXPECT_EQ(CheckOutput(c.problem, c.inputs, shape, full).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckOutputTest, NonFiniteOutsideTheSampledRowsFails) {
  const Checked c = RunAndKeep(Odd());  // 2 x 6 x 19 = 228 rows of D_v = 10
  CheckOptions sampled;
  sampled.max_rows = 20;
  sampled.seed = 3;
  const absl::StatusOr<CorrectnessReport> clean =
      CheckOutput(c.problem, c.inputs, c.output, sampled);
  ASSERT_TRUE(clean.ok());
  ASSERT_TRUE(clean->passed);
  EXPECT_EQ(clean->non_finite_elements, 0);
  // A row the sample leaves out: spoiling it with finite nonsense still passes.
  int64_t unsampled = -1;
  for (int64_t offset = static_cast<int64_t>(c.output.values.size()) - 10; offset >= 0;
       offset -= 10) {
    FloatTensor probe = c.output;
    for (int d = 0; d < 10; ++d) probe.values[offset + d] += 100.0f;
    if (CheckOutput(c.problem, c.inputs, probe, sampled)->passed) {
      unsampled = offset;
      break;
    }
  }
  ASSERT_GE(unsampled, 0);
  for (const auto& [kind, value] : testing::NonFiniteValues()) {
    FloatTensor spoiled = c.output;
    spoiled.values[unsampled + 4] = value;
    absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, spoiled, sampled);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->rows_checked, 20);
    EXPECT_TRUE(std::isfinite(r->relative_error)) << kind << ": the compared rows are clean";
    EXPECT_LE(r->relative_error, r->tolerance) << kind;
    EXPECT_EQ(r->non_finite_elements, 1) << kind;
    EXPECT_FALSE(r->passed) << kind;
    CheckOptions full;
    full.full = true;
    r = CheckOutput(c.problem, c.inputs, spoiled, full);
    EXPECT_EQ(r->non_finite_elements, 1) << kind;
    EXPECT_FALSE(r->passed) << kind;
  }
}

TEST(CheckOutputTest, AllMaskedReferenceUsesAbsoluteError) {
  Problem p = Odd();
  p.mask.kind = MaskKind::kBlockSparse;  // no blocks listed: every row is hidden
  p.mask.query_block_tokens = 4;
  p.mask.kv_block_tokens = 4;
  const Checked c = RunAndKeep(p);
  absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, {});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->relative_error, 0);
  FloatTensor off = c.output;
  off.values[0] = 1.0f;
  r = CheckOutput(c.problem, c.inputs, off, {});
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->relative_error, 1.0);
}

TEST(CheckOutputTest, SamplesDistinctSeededRows) {
  const Checked c = RunAndKeep(Odd());  // 2 x 6 x 19 = 228 rows
  const int64_t total = 228;
  // Corrupt one row (b=1, h=4, i=7): a sample that leaves out exactly one row misses it only
  // when that row is the one left out.
  FloatTensor corrupt = c.output;
  const int64_t offset = ((1 * 19 + 7) * 6 + 4) * 10;
  for (int d = 0; d < 10; ++d) corrupt.values[offset + d] += 10.0f;
  int passes = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    CheckOptions o;
    o.max_rows = total - 1;
    o.seed = seed;
    const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, corrupt, o);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->rows_checked, total - 1);
    passes += r->passed;
  }
  // Expected 400 / 228 ~ 1.75 misses; a sampler repeating rows would miss far more often.
  EXPECT_LE(passes, 8);
  CheckOptions o;
  o.max_rows = 20;
  o.seed = 3;
  const CorrectnessReport a = *CheckOutput(c.problem, c.inputs, c.output, o);
  const CorrectnessReport b = *CheckOutput(c.problem, c.inputs, c.output, o);
  EXPECT_EQ(a.rows_checked, 20);
  EXPECT_EQ(a.relative_error, b.relative_error);
  o.seed = 4;
  EXPECT_NE(CheckOutput(c.problem, c.inputs, c.output, o)->relative_error, a.relative_error);
  // max_rows >= rows_total compares everything.
  o.max_rows = 1000;
  EXPECT_EQ(CheckOutput(c.problem, c.inputs, c.output, o)->rows_checked, total);
}

TEST(CheckOutputTest, SamplingNeverMissesAllOfACorruptedBatch) {
  const Checked c = RunAndKeep(Odd());
  FloatTensor corrupt = c.output;
  for (size_t k = corrupt.values.size() / 2; k < corrupt.values.size(); ++k) corrupt.values[k] = 5;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    CheckOptions o;
    o.max_rows = 40;
    o.seed = seed;
    EXPECT_FALSE(CheckOutput(c.problem, c.inputs, corrupt, o)->passed) << seed;
  }
}

// A decode from a quantized cache reports its error apart: the kernel's own (against the oracle
// of the cache as stored) under the dtype's tolerance alone, and the quantization's (that oracle
// against the unquantized one), which dominates; both on every quantized format, with RoPE (the
// stored keys are rotated, as a cache holds them) and without. A native cache, or a prefill,
// reports none.
TEST(CheckOutputTest, QuantizedDecodeSplitsTheKernelsErrorFromTheQuantizations) {
  CheckOptions full;
  full.full = true;
  for (const testing::CacheFormatCase& q : testing::QuantizedCacheCases()) {
    for (bool rope : {false, true}) {
      Problem p = Odd();
      p.phase = Phase::kDecode;
      p.seq_len_q = 3;
      p.seq_len_kv = 211;
      p.dtype = DType::kFloat16;
      p.mask.kind = MaskKind::kCausal;
      p.rope.enabled = rope;
      q.edit(p.kv_cache);
      const std::string ctx = q.name + (rope ? " rope" : "");
      const Checked c = RunAndKeep(p);
      const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, full);
      ASSERT_TRUE(r.ok()) << ctx << ": " << r.status();
      ASSERT_TRUE(r->quantization.has_value()) << ctx;
      const QuantizationSplit& s = *r->quantization;
      // cpu_reference reads the stored cache: its own error is the fp16 output's rounding.
      EXPECT_EQ(s.kernel_tolerance, 5e-3) << ctx;
      EXPECT_TRUE(s.kernel_passed) << ctx << ": " << s.kernel_relative_error;
      EXPECT_LT(s.kernel_relative_error, 1e-3) << ctx;
      EXPECT_GT(s.quantization_relative_error, 10 * s.kernel_relative_error) << ctx;
      // The two make up the error against the unquantized reference (triangle inequality).
      EXPECT_LE(r->relative_error, (s.kernel_relative_error * (1 + s.quantization_relative_error) +
                                    s.quantization_relative_error) *
                                       (1 + 1e-9))
          << ctx;
      EXPECT_GE(r->relative_error, s.quantization_relative_error - 2 * s.kernel_relative_error)
          << ctx;
      // An output off by 2% is the kernel's error, caught whatever the quantization allows.
      FloatTensor off = c.output;
      for (float& v : off.values) v *= 1.02f;
      const absl::StatusOr<CorrectnessReport> bad = CheckOutput(c.problem, c.inputs, off, full);
      ASSERT_TRUE(bad.ok() && bad->quantization.has_value()) << ctx;
      EXPECT_FALSE(bad->quantization->kernel_passed) << ctx;
      EXPECT_GT(bad->quantization->kernel_relative_error, 1.5e-2) << ctx;
    }
  }
  Problem native = Odd();
  native.phase = Phase::kDecode;
  native.seq_len_q = 3;
  const Checked n = RunAndKeep(native);
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(n.problem, n.inputs, n.output, full);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->quantization.has_value());
  EXPECT_FALSE(QuantizedDecode(n.problem));
}

// FP8 on drawn inputs (§1b) reports its error apart too: the kernel's own against the oracle of
// the codes times their scales (cpu_reference's is the bfloat16 output's rounding), and the
// quantization's against the oracle of the float32 draws. Per tensor and per head, derived and
// given scales, with RoPE and ALiBi; codes a client sent have no draws, so no split.
TEST(CheckOutputTest, Float8SplitsTheKernelsErrorFromTheQuantizations) {
  CheckOptions full;
  full.full = true;
  struct Case {
    const char* name;
    ScaleGranularity granularity;
    bool given;
  };
  for (const Case& k : {Case{"tensor derived", ScaleGranularity::kTensor, false},
                        Case{"head derived", ScaleGranularity::kHead, false},
                        Case{"head given", ScaleGranularity::kHead, true}}) {
    Problem p = Odd();
    p.dtype = DType::kFloat8E4M3;
    p.mask.kind = MaskKind::kCausal;
    p.rope.enabled = true;
    p.alibi.enabled = true;
    p.input_scale = 2.5;
    p.float8.granularity = k.granularity;
    const absl::StatusOr<HeadConfig> heads = ResolveHeads(p.layout);
    ASSERT_TRUE(heads.ok());
    if (k.given) {
      // Scales that differ by head, so a kernel applying the wrong head's is caught.
      for (int h = 0; h < heads->num_query_heads; ++h) {
        p.float8.query_scales.push_back(0.02f + 0.01f * h);
      }
      for (int h = 0; h < heads->num_kv_heads; ++h) {
        p.float8.key_scales.push_back(0.03f - 0.002f * h);
        p.float8.value_scales.push_back(0.015f + 0.004f * h);
      }
    }
    const Checked c = RunAndKeep(p);
    const size_t want = k.granularity == ScaleGranularity::kHead ? heads->num_query_heads : 1;
    ASSERT_EQ(c.inputs.query.scales.size(), want) << k.name;
    if (k.given) {
      EXPECT_EQ(c.inputs.query.scales, p.float8.query_scales) << k.name;
    }
    const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, full);
    ASSERT_TRUE(r.ok()) << k.name << ": " << r.status();
    EXPECT_TRUE(r->passed) << k.name << ": " << r->relative_error;
    ASSERT_TRUE(r->quantization.has_value()) << k.name;
    const QuantizationSplit& q = *r->quantization;
    EXPECT_EQ(q.kernel_tolerance, 5e-2) << k.name;
    EXPECT_TRUE(q.kernel_passed) << k.name;
    EXPECT_LT(q.kernel_relative_error, 4e-3) << k.name;
    EXPECT_GT(q.quantization_relative_error, 5 * q.kernel_relative_error) << k.name;
    EXPECT_LT(q.quantization_relative_error, 1e-1) << k.name;
    // The output of the codes alone (a kernel that forgot the scales: the same codes sent by a
    // client, whose scales are then 1) fails outright.
    Problem forgot = c.problem;
    forgot.float8 = Float8Scaling{};
    forgot.query = testing::ToHost(c.inputs.query);
    forgot.key = testing::ToHost(c.inputs.key);
    forgot.value = testing::ToHost(c.inputs.value);
    const Checked unscaled = RunAndKeep(forgot);
    EXPECT_EQ(unscaled.inputs.value.scales, std::vector<float>{1.0f}) << k.name;
    const absl::StatusOr<CorrectnessReport> bad =
        CheckOutput(c.problem, c.inputs, unscaled.output, full);
    ASSERT_TRUE(bad.ok() && bad->quantization.has_value()) << k.name;
    EXPECT_FALSE(bad->passed) << k.name;
    EXPECT_FALSE(bad->quantization->kernel_passed) << k.name;
  }
  // Codes the client sent: compared with the oracle of what they stand for, no split.
  Problem sent = Odd();
  sent.dtype = DType::kFloat8E4M3;
  sent = NormalizeProblem(sent);
  const absl::StatusOr<AttentionInputs> drawn = GenerateInputs(sent);
  ASSERT_TRUE(drawn.ok());
  sent.query = testing::ToHost(drawn->query);
  sent.key = testing::ToHost(drawn->key);
  sent.value = testing::ToHost(drawn->value);
  sent.float8.key_scales = {0.5f};
  EXPECT_FALSE(SplitsQuantizationError(sent));
  const Checked c = RunAndKeep(sent);
  EXPECT_EQ(c.inputs.key.scales, std::vector<float>{0.5f});
  EXPECT_EQ(c.inputs.query.scales, std::vector<float>{1.0f});
  EXPECT_EQ(c.inputs.key.values, drawn->key.values);
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, full);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->passed) << r->relative_error;
  EXPECT_FALSE(r->quantization.has_value());
  EXPECT_LT(r->relative_error, 4e-3);
}

// A cache long enough that the check's passes over it (rotating the keys, storing them, reading
// them back, the oracles' keys) are split over threads: the cache read back must still be the one
// the backend reads, with pages and SAQ bands crossing the threads' ranges of tokens.
TEST(CheckOutputTest, QuantizedDecodeOfALongCacheReadsTheStoredCache) {
  Problem p = Odd();
  p.phase = Phase::kDecode;
  p.seq_len_q = 1;
  p.seq_len_kv = 9001;
  p.dtype = DType::kFloat16;
  p.rope.enabled = true;
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 64;
  p.kv_cache.saq_bands = {{1000, CacheFormat::kInt8}, {3000, CacheFormat::kInt4}};  // rest native
  const Checked c = RunAndKeep(p);
  CheckOptions full;
  full.full = true;
  const absl::StatusOr<CorrectnessReport> r = CheckOutput(c.problem, c.inputs, c.output, full);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->quantization.has_value());
  EXPECT_TRUE(r->quantization->kernel_passed) << r->quantization->kernel_relative_error;
  EXPECT_LT(r->quantization->kernel_relative_error, 1e-3);
  EXPECT_GT(r->quantization->quantization_relative_error,
            10 * r->quantization->kernel_relative_error);
}

TEST(ToleranceTest, ByDtypeAndCache) {
  Problem p = NormalizeProblem(Odd());
  EXPECT_EQ(ToleranceFor(p), 1e-4);
  p.dtype = DType::kFloat16;
  EXPECT_EQ(ToleranceFor(p), 5e-3);
  p.dtype = DType::kBFloat16;
  EXPECT_EQ(ToleranceFor(p), 1e-2);
  p.dtype = DType::kFloat8E4M3;
  EXPECT_EQ(DTypeToleranceFor(p), 5e-2);
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-2 + 1e-1);
  p.dtype = DType::kFloat16;
  p.phase = Phase::kDecode;
  p.kv_cache.format = CacheFormat::kInt8;
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-3 + 3e-2);
  p.kv_cache.format = CacheFormat::kInt4;
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-3 + 2.5e-1);
  p.kv_cache.format = CacheFormat::kUnspecified;
  p.kv_cache.saq_bands = {{4, CacheFormat::kNative}, {4, CacheFormat::kInt8}};
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-3 + 3e-2);
  p.kv_cache.saq_bands.push_back({std::nullopt, CacheFormat::kInt4});
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-3 + 2.5e-1);
  // Bands that cover the whole cache before the int4 band leave it unused.
  p.kv_cache.saq_bands = {{100, CacheFormat::kInt8}, {std::nullopt, CacheFormat::kInt4}};
  EXPECT_DOUBLE_EQ(ToleranceFor(p), 5e-3 + 3e-2);
}

}  // namespace
}  // namespace attnbench
