// spec.kv_spectrum and spec.kv_compression in the spec layer: the spectrum generator follows the
// recipe of inputs.h element by element, has the documented rank, variance and decaying singular
// values, and stays within its bound; validation refuses each rule of both options with
// INVALID_ARGUMENT naming the field.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/compress/symmetric_eigen.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/finite_inputs.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::SmallProblem;

Problem Spectrum(double decay, std::optional<int> rank = std::nullopt) {
  Problem p = SmallProblem();
  p.kv_spectrum = {true, decay, rank};
  return p;
}

TEST(KvSpectrumTest, Rank) {
  // decay^k >= 1e-4: 0.5^13 = 1.2e-4, 0.5^14 = 6.1e-5, so 14 terms.
  EXPECT_EQ(SpectrumRank({true, 0.5, std::nullopt}, 1000), 14);
  EXPECT_EQ(SpectrumRank({true, 0.5, std::nullopt}, 10), 10);
  EXPECT_EQ(SpectrumRank({true, 0.5, 3}, 1000), 3);
  EXPECT_EQ(SpectrumRank({true, 0.9999, std::nullopt}, 64), 64);
}

TEST(KvSpectrumTest, FollowsTheDocumentedRecipe) {
  const uint64_t seed = 77;
  const KvSpectrum spectrum{true, 0.6, 5};
  const Shape shape = {2, 3, 2, 4};  // n = 8, r = 5
  const FloatTensor t = GenerateSpectrumTensor(seed, kTensorValue, kTensorValueBasis, shape,
                                               spectrum, 1.5, DType::kFloat16);
  const int64_t n = 8, r = 5;
  double w[5], sum2 = 0;
  for (int k = 0; k < r; ++k) {
    w[k] = k == 0 ? 1.0 : w[k - 1] * 0.6;
    sum2 += w[k] * w[k];
  }
  const double norm = 1 / std::sqrt(sum2);
  for (int64_t row = 0; row < 6; ++row) {
    for (int64_t c = 0; c < n; ++c) {
      double acc = 0;
      for (int64_t k = 0; k < r; ++k) {
        acc += w[k] * StandardNormal(seed, kTensorValue, row * r + k) *
               StandardNormal(seed, kTensorValueBasis, k * n + c);
      }
      ASSERT_EQ(t.values[row * n + c],
                RoundToDType(static_cast<float>(1.5 * norm * acc), DType::kFloat16))
          << row << " " << c;
    }
  }
}

TEST(KvSpectrumTest, GenerateInputsUsesItForKeyAndValueOnly) {
  Problem p = NormalizeProblem(Spectrum(0.7));
  const AttentionInputs in = *GenerateInputs(p);
  const ProblemShapes s = *ShapesOf(p);
  EXPECT_EQ(in.key.values, GenerateSpectrumTensor(p.seed, kTensorKey, kTensorKeyBasis, s.key,
                                                  p.kv_spectrum, 1.0, p.dtype)
                               .values);
  EXPECT_EQ(in.value.values, GenerateSpectrumTensor(p.seed, kTensorValue, kTensorValueBasis,
                                                    s.value, p.kv_spectrum, 1.0, p.dtype)
                                 .values);
  EXPECT_EQ(in.query.values, GenerateTensor(p.seed, kTensorQuery, s.query, 1.0, p.dtype).values);
}

TEST(KvSpectrumTest, UnitVarianceAndDecayingSingularValues) {
  const KvSpectrum spectrum{true, 0.7, std::nullopt};
  const Shape shape = {1, 512, 4, 16};  // n = 64, r = 26
  const FloatTensor t =
      GenerateSpectrumTensor(3, kTensorKey, kTensorKeyBasis, shape, spectrum, 2.0, DType::kFloat32);
  double sum2 = 0;
  for (float x : t.values) sum2 += x * x;
  EXPECT_NEAR(sum2 / t.values.size(), 4.0, 0.6);  // variance input_scale^2
  // Eigenvalues of X^T X are the squared singular values: they fall about as decay^2.
  const int64_t n = 64;
  std::vector<double> gram(n * n, 0.0);
  for (int64_t s = 0; s < 512; ++s) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) gram[i * n + j] += t.values[s * n + i] * t.values[s * n + j];
    }
  }
  const SymmetricEigenResult e = *SymmetricEigen(gram, n);
  for (int k = 1; k <= 6; ++k) {
    const double ratio = std::sqrt(e.values[k] / e.values[k - 1]);
    EXPECT_GT(ratio, 0.45) << k;
    EXPECT_LT(ratio, 0.95) << k;
  }
  EXPECT_LT(e.values[30], 1e-6 * e.values[0]);  // rank 26
}

TEST(KvSpectrumTest, ValuesStayWithinTheBound) {
  const KvSpectrum spectrum{true, 0.95, 4};
  const FloatTensor t = GenerateSpectrumTensor(11, kTensorKey, kTensorKeyBasis, {4, 64, 2, 8},
                                               spectrum, 1.0, DType::kFloat32);
  const double bound = SpectrumLargestAbs(0.95, 4);
  const double z = LargestAbsStandardNormal();
  EXPECT_LE(bound, z * z * 2.0 + 1e-9);  // at most z^2 sqrt(r)
  for (float x : t.values) ASSERT_LE(std::fabs(x), bound);
}

// Each rule: a valid variant passes, the broken one names the field.
void ExpectInvalid(const Problem& p, const std::string& text) {
  const absl::Status s = ValidateProblem(NormalizeProblem(p));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(text), std::string::npos) << s.message();
}

TEST(KvSpectrumValidationTest, Rules) {
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(Spectrum(0.5))).ok());
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(Spectrum(0.5, 2))).ok());
  ExpectInvalid(Spectrum(0), "spec.kv_spectrum.decay (0) must be in (0, 1)");
  ExpectInvalid(Spectrum(1), "spec.kv_spectrum.decay (1) must be in (0, 1)");
  ExpectInvalid(Spectrum(std::nan("")), "spec.kv_spectrum.decay (nan) must be in (0, 1)");
  ExpectInvalid(Spectrum(0.5, 0), "spec.kv_spectrum.rank (0) must be > 0");

  Problem client = Spectrum(0.5);
  const ProblemShapes s = *ShapesOf(NormalizeProblem(client));
  auto host = [&](const Shape& shape, uint32_t id) {
    const FloatTensor t = GenerateTensor(1, id, shape, 1.0, DType::kFloat32);
    return HostTensor{DType::kFloat32, shape, EncodeTensor(t)};
  };
  client.query = host(s.query, 0);
  client.key = host(s.key, 1);
  client.value = host(s.value, 2);
  ExpectInvalid(client, "spec.kv_spectrum is only valid with generated K and V");

  Problem layer = Spectrum(0.5);
  layer.scope = Scope::kLayer;
  layer.d_model = 16;
  ExpectInvalid(layer, "spec.kv_spectrum is only valid with spec.scope = SCOPE_CORE");

  // Overflow: fp16 at an input_scale the plain generator allows (6.7637 * 5000 < 65504) but the
  // spectrum's bound (z^2 * ~sqrt(r)) does not.
  Problem big = Spectrum(0.99);
  big.dtype = DType::kFloat16;
  big.input_scale = 5000;
  ExpectInvalid(big,
                "spec.input_scale (5000) would make float16 K or V drawn with spec.kv_spectrum");
  big.input_scale = 100;
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(big)).ok());

  // Cost: a basis over kMaxSpectrumBasisElements.
  Problem wide = Spectrum(0.9999);
  wide.layout.num_heads = 64;
  wide.head_dim_qk = 128;  // n = 8192, r = 8192
  ExpectInvalid(wide, "spec.kv_spectrum.decay (0.9999) gives rank r = 8192");
  wide.kv_spectrum.rank = 64;
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(wide)).ok());
}

Problem Compression(int target) {
  Problem p = SmallProblem();  // MHA 4
  p.kv_compression = {true, target};
  return p;
}

TEST(KvCompressionValidationTest, Rules) {
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(Compression(2))).ok());
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(Compression(1))).ok());
  ExpectInvalid(Compression(0), "spec.kv_compression.target_kv_heads (0) must be > 0");
  ExpectInvalid(Compression(4),
                "spec.kv_compression.target_kv_heads (4) must be less than the layout's KV heads "
                "(4) and divide them into equal groups");
  ExpectInvalid(Compression(3), "spec.kv_compression.target_kv_heads (3) must be less than");

  Problem gqa = Compression(2);
  gqa.layout = {};
  gqa.layout.kind = LayoutKind::kGqa;
  gqa.layout.num_query_heads = 8;
  gqa.layout.num_kv_heads = 4;
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(gqa)).ok());
  gqa.layout.num_kv_heads = 2;  // 2 -> 2 is no compression
  ExpectInvalid(gqa,
                "spec.kv_compression.target_kv_heads (2) must be less than the layout's KV "
                "heads (2)");

  Problem mqa = Compression(1);
  mqa.layout.kind = LayoutKind::kMqa;
  ExpectInvalid(mqa, "spec.kv_compression is only valid with spec.layout mha or gqa");
  Problem gqkva = Compression(1);
  gqkva.layout = {};
  gqkva.layout.kind = LayoutKind::kGqkva;
  gqkva.layout.query_groups = 2;
  gqkva.layout.kv_groups = 2;
  ExpectInvalid(gqkva,
                "spec.layout mha or gqa (KV heads in equal groups of consecutive heads, "
                "each output head reading its own query head); got gqkva");

  Problem layer = Compression(2);
  layer.scope = Scope::kLayer;
  layer.d_model = 16;
  ExpectInvalid(layer, "spec.kv_compression is only valid with spec.scope = SCOPE_CORE");
  Problem backward = Compression(2);
  backward.phase = Phase::kBackward;
  ExpectInvalid(
      backward,
      "spec.kv_compression is only valid with spec.phase = PHASE_PREFILL or PHASE_DECODE");
  Problem decode = Compression(2);
  decode.phase = Phase::kDecode;
  decode.seq_len_q = 1;
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(decode)).ok());

  Problem expr = Compression(2);
  expr.score_mod = "s";
  ExpectInvalid(expr,
                "spec.kv_compression is not valid with spec.score_mod or spec.mask_mod: an "
                "expression may read hkv");
  expr.score_mod.reset();
  expr.mask_mod = "kv <= q";
  ExpectInvalid(expr, "spec.kv_compression is not valid with spec.score_mod or spec.mask_mod");
}

}  // namespace
}  // namespace attnbench
