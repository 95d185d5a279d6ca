// The spec side of score_mod / mask_mod (kernels/spec/expressions.h): ValidateProblem reports
// expression and aux errors by field (spec.score_mod.expression, spec.mask_mod.expression,
// spec.aux[i]...), and counting kept pairs with a mask_mod (document mask from an aux tensor,
// prefix-LM, head-dependent masks, intersection with spec.mask) equals brute force; a count too
// large to classify is RESOURCE_EXHAUSTED at once.
#include "kernels/spec/expressions.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/mask.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

HostTensor Float32(std::vector<int64_t> shape, const std::vector<float>& values) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = std::move(shape);
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

NamedTensor Aux(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  return {std::move(name), Float32(std::move(shape), values)};
}

// B = 2, S_q = S_kv = 16, 4 heads, D = 8; not normalized.
Problem Base() { return testing::SmallProblem(); }

// ValidateProblem's message, "ok", with the status code checked.
std::string Validate(const Problem& p, absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  const absl::Status s = ValidateProblem(NormalizeProblem(p));
  if (s.ok()) return "ok";
  EXPECT_EQ(s.code(), code) << s;
  return std::string(s.message());
}

TEST(ExpressionsTest, NoExpressionsIsNull) {
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> e =
      CompileExpressions(NormalizeProblem(Base()));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, nullptr);
  Problem p = Base();
  p.aux.push_back(Aux("doc", {16}, std::vector<float>(16, 0)));
  EXPECT_EQ(Validate(p),
            "spec.aux is only valid with spec.score_mod or spec.mask_mod, which index it");
}

TEST(ExpressionsTest, ExpressionErrorsNameTheField) {
  Problem p = Base();
  p.score_mod = "s + qq";
  EXPECT_EQ(Validate(p).substr(0, 57), "spec.score_mod.expression: column 5: unknown name 'qq' (v");
  p.score_mod = "";
  EXPECT_EQ(Validate(p), "spec.score_mod.expression is empty");
  p.score_mod = "s * 0.5";
  EXPECT_EQ(Validate(p), "ok");
  p.mask_mod = "kv";
  EXPECT_EQ(Validate(p),
            "spec.mask_mod.expression: column 1: a mask_mod must be bool (true keeps the pair), "
            "not int");
  p.mask_mod = "s > 0.0";
  EXPECT_EQ(Validate(p).substr(0, 41), "spec.mask_mod.expression: column 1: 's' (");
  p.mask_mod = std::string(5000, '(');
  EXPECT_EQ(Validate(p),
            "spec.mask_mod.expression: column 4097: the expression is 5000 bytes long, over the "
            "limit of 4096");
  p.mask_mod = "kv <= q";
  EXPECT_EQ(Validate(p), "ok");
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> e =
      CompileExpressions(NormalizeProblem(p));
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_NE(*e, nullptr);
  EXPECT_TRUE((*e)->score_mod.has_value());
  EXPECT_TRUE((*e)->mask_mod.has_value());
}

TEST(ExpressionsTest, AuxIndexBoundsFollowTheProblem) {
  Problem p = Base();  // S_kv = 16, 4 heads, B = 2
  p.mask_mod = "doc[q] == doc[kv]";
  p.aux.push_back(Aux("doc", {16}, std::vector<float>(16, 1)));
  EXPECT_EQ(Validate(p), "ok");
  p.aux[0] = Aux("doc", {15}, std::vector<float>(15, 1));
  EXPECT_EQ(Validate(p),
            "spec.mask_mod.expression: column 5: index 0 of 'doc' can be anywhere in [0, 15] for "
            "this problem, outside [0, 14]; bound it with min and max");
  p.aux[0] = Aux("doc", {16}, std::vector<float>(16, 1));
  p.mask_mod = "doc[kv - 1] < 2.0";
  EXPECT_EQ(Validate(p).substr(0, 61),
            "spec.mask_mod.expression: column 8: index 0 of 'doc' can be a");
  // A head table: rows are the 4 output heads.
  p.mask_mod.reset();
  p.score_mod = "s + bias[h, kv]";
  p.aux[0] = Aux("bias", {4, 16}, std::vector<float>(64, 0.5f));
  EXPECT_EQ(Validate(p), "ok");
  p.layout.num_heads = 5;
  EXPECT_EQ(Validate(p).substr(0, 62),
            "spec.score_mod.expression: column 10: index 0 of 'bias' can be");
  p.layout.num_heads = 4;
  p.aux[0] = Aux("bias", {64}, std::vector<float>(64, 0.5f));
  EXPECT_EQ(Validate(p),
            "spec.score_mod.expression: column 5: aux tensor 'bias' has 1 dimension but is indexed "
            "with 2");
}

TEST(ExpressionsTest, AuxTensorErrorsNameTheTensor) {
  Problem p = Base();
  p.score_mod = "s";
  const std::vector<float> v16(16, 0);
  p.aux = {Aux("ok", {16}, v16), Aux("1doc", {16}, v16)};
  EXPECT_EQ(Validate(p),
            "spec.aux[1].name \"1doc\" must be an identifier of at most 64 characters "
            "([A-Za-z_][A-Za-z0-9_]*)");
  p.aux[1].name = "";
  EXPECT_EQ(Validate(p).substr(0, 22), "spec.aux[1].name \"\" mu");
  p.aux[1].name = std::string(65, 'a');
  EXPECT_EQ(Validate(p).substr(0, 16), "spec.aux[1].name");
  p.aux[1].name = "a-b";
  EXPECT_EQ(Validate(p).substr(0, 25), "spec.aux[1].name \"a-b\" mu");
  p.aux[1].name = "kv";
  EXPECT_EQ(Validate(p),
            "spec.aux[1].name \"kv\" is a variable or function name of the expression language");
  p.aux[1].name = "sigmoid";
  EXPECT_EQ(Validate(p).substr(0, 33), "spec.aux[1].name \"sigmoid\" is a v");
  p.aux[1].name = "ok";
  EXPECT_EQ(Validate(p), "spec.aux[1].name \"ok\" repeats spec.aux[0].name");
  p.aux[1].name = "other";
  EXPECT_EQ(Validate(p), "ok");
  p.aux[1].tensor.dtype = DType::kUnspecified;
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.dtype must be set");
  p.aux[1] = Aux("other", {2, 2, 4}, v16);
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.shape has 3 dimensions; an aux tensor has 1 or 2");
  p.aux[1] = Aux("other", {}, {});
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.shape has 0 dimensions; an aux tensor has 1 or 2");
  p.aux[1] = Aux("other", {0}, {});
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.shape dimensions must be in [1, 67108864], not 0");
  p.aux[1] = Aux("other", {-3}, {});
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.shape dimensions must be in [1, 67108864], not -3");
  p.aux[1] = Aux("other", {17}, v16);
  EXPECT_EQ(Validate(p), "spec.aux[1].tensor.data has 64 bytes; 17 elements of float32 need 68");
  // Huge shapes are refused before anything is allocated, whatever the data size.
  p.aux[1] = Aux("other", {int64_t{1} << 26, int64_t{1} << 26}, v16);
  EXPECT_EQ(Validate(p, absl::StatusCode::kResourceExhausted).substr(0, 20),
            "spec.aux: 4503599627");
  p.aux[1] = Aux("other", {int64_t{1} << 40}, v16);
  EXPECT_EQ(Validate(p).substr(0, 51), "spec.aux[1].tensor.shape dimensions must be in [1, ");
  p.aux[1] =
      Aux("other", {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max()}, v16);
  EXPECT_EQ(Validate(p).substr(0, 51), "spec.aux[1].tensor.shape dimensions must be in [1, ");
  std::vector<float> nan = v16;
  nan[5] = std::nanf("");
  p.aux[1] = Aux("other", {4, 4}, nan);
  EXPECT_EQ(Validate(p).substr(0, 45), "spec.aux[1].tensor: element 5 [1, 1] is NaN; ");
  nan[5] = std::numeric_limits<float>::infinity();
  p.aux[1] = Aux("other", {16}, nan);
  EXPECT_NE(Validate(p).find("spec.aux[1].tensor: element 5"), std::string::npos);
}

// Kept pairs of (b, h) by brute force over the mask's meaning written in C++ (not through the
// interpreter, which would test counting only against itself).
using Rule = std::function<bool(int64_t b, int h, int64_t q, int64_t kv)>;
uint64_t Brute(const Problem& p, int64_t b, int h, const Rule& rule) {
  uint64_t n = 0;
  for (int64_t i = 0; i < p.seq_len_q; ++i) {
    const int64_t q = p.seq_len_kv - p.seq_len_q + i;
    for (int64_t kv = 0; kv < p.seq_len_kv; ++kv) n += rule(b, h, q, kv);
  }
  return n;
}

void ExpectCounts(const Problem& raw, const Rule& rule) {
  const Problem p = NormalizeProblem(raw);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  uint64_t total = 0;
  for (int64_t b = 0; b < p.batch_size; ++b) {
    for (int h = 0; h < p.layout.num_heads; ++h) {
      const uint64_t want = Brute(p, b, h, rule);
      ASSERT_EQ(KeptPairs(p, b, h), want) << *p.mask_mod << " b=" << b << " h=" << h;
      ASSERT_EQ(KeptPairsFromCoverage(p, b, h), want) << *p.mask_mod;
      total += want;
    }
  }
  absl::StatusOr<WorkCounts> w = CountWork(p);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->kept_pairs, total) << *p.mask_mod;
}

TEST(ExpressionsCountingTest, DocumentMaskFromAuxTensor) {
  // 200 x 200 (not a multiple of the 64-pair tiles), documents of uneven lengths.
  Problem p = Base();
  p.seq_len_q = p.seq_len_kv = 200;
  std::vector<float> ids(200);
  for (int i = 0; i < 200; ++i)
    ids[i] = static_cast<float>(i < 7 ? 0 : i < 90 ? 1 : i < 150 ? 2 : 3);
  p.aux.push_back(Aux("doc", {200}, ids));
  p.mask_mod = "doc[q] == doc[kv]";
  ExpectCounts(p, [&](int64_t, int, int64_t q, int64_t kv) { return ids[q] == ids[kv]; });
  p.mask_mod = "doc[q] == doc[kv] && kv <= q";
  ExpectCounts(p,
               [&](int64_t, int, int64_t q, int64_t kv) { return ids[q] == ids[kv] && kv <= q; });
  // Intersected with spec.mask (causal).
  p.mask_mod = "doc[q] == doc[kv]";
  p.mask.kind = MaskKind::kCausal;
  ExpectCounts(p,
               [&](int64_t, int, int64_t q, int64_t kv) { return ids[q] == ids[kv] && kv <= q; });
}

TEST(ExpressionsCountingTest, PrefixLmAndRectangular) {
  Problem p = Base();
  p.seq_len_q = 100;
  p.seq_len_kv = 150;  // q runs over [50, 150)
  p.mask_mod = "kv < 16 || kv <= q";
  ExpectCounts(p, [](int64_t, int, int64_t q, int64_t kv) { return kv < 16 || kv <= q; });
  p.seq_len_q = 130;
  p.seq_len_kv = 70;  // q runs over [-60, 70)
  ExpectCounts(p, [](int64_t, int, int64_t q, int64_t kv) { return kv < 16 || kv <= q; });
  p.mask_mod = "kv < 4 || (kv <= q && q - kv < 20)";  // sinks + sliding window
  ExpectCounts(
      p, [](int64_t, int, int64_t q, int64_t kv) { return kv < 4 || (kv <= q && q - kv < 20); });
}

TEST(ExpressionsCountingTest, MasksThatReadBatchAndHead) {
  Problem p = Base();  // B = 2, 4 heads
  p.seq_len_q = p.seq_len_kv = 70;
  p.mask_mod = "kv % (h + 1) == 0 || b == 1";
  ExpectCounts(p,
               [](int64_t b, int h, int64_t, int64_t kv) { return kv % (h + 1) == 0 || b == 1; });
  p.mask_mod = "hq * 10 <= kv && kv < q";
  ExpectCounts(p, [](int64_t, int h, int64_t q, int64_t kv) { return h * 10 <= kv && kv < q; });
  p.mask_mod = "1 < 0";
  ExpectCounts(p, [](int64_t, int, int64_t, int64_t) { return false; });
}

TEST(ExpressionsCountingTest, TooManyTilesIsResourceExhaustedAtOnce) {
  Problem p = Base();  // B = 2, 4 heads: a mask reading b and h is classified 8 times
  p.seq_len_q = p.seq_len_kv = 65600;  // 1025 x 1025 tiles
  p.mask_mod = "kv <= q + b + h";
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<WorkCounts> w = CountWork(n);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kResourceExhausted) << w.status();
  EXPECT_EQ(w.status().message(),
            "spec.mask_mod.expression: counting its kept pairs takes 8405000 tile "
            "classifications (64 x 64 pairs per tile, per batch, per head), over the limit of "
            "8388608");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  // The same mask without b and h is counted once: 1025 x 1025 tiles.
  p.seq_len_q = p.seq_len_kv = 4096 + 64;
  p.mask_mod = "kv <= q";
  absl::StatusOr<WorkCounts> once = CountWork(NormalizeProblem(p));
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(once->kept_pairs, 2u * 4 * (4160u * 4161 / 2));
}

}  // namespace
}  // namespace attnbench
