// The interpreter (kernels/expr/evaluate.h) against hand-computed values for every rule of its
// semantics (wrapping int64, x / 0 = x % 0 = 0, C promotion, ?:, sigmoid, saturating floor and
// ceil, fmin/fmax with NaN), in float and double; and the row entry points (Scores, Mask) over
// rows longer than kLanes and not a multiple of it, pair for pair equal to Score and Keeps.
#include "kernels/expr/evaluate.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::expr {
namespace {

using testing::MakeAux;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename F>
class EvaluateTest : public ::testing::Test {
 protected:
  EvaluateTest() {
    aux_ = {MakeAux("doc", {8}, {0, 0, 0, 1, 1, 2, 2, 2}),
            MakeAux("bias", {2, 8}, {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17})};
    env_.batch = 2;
    env_.output_heads = 4;
    env_.query_heads = 4;
    env_.kv_heads = 2;
    env_.seq_q = 3;
    env_.seq_kv = 8;
    env_.aux = &aux_;
    bind_.b = 1;
    bind_.h = 3;
    bind_.q = 6;
    bind_.hq = 3;
    bind_.hkv = 1;
  }

  // The score_mod `text` at key kv with score s.
  F Score(const std::string& text, int64_t kv, double s = 0) {
    absl::StatusOr<Program> p = Compile(text, Kind::kScoreMod, env_);
    EXPECT_TRUE(p.ok()) << text << ": " << p.status();
    if (!p.ok()) return F(-12345);
    Evaluator<F> eval(*p, aux_);
    return eval.Score(bind_, kv, static_cast<F>(s));
  }
  bool Keeps(const std::string& text, int64_t kv) {
    absl::StatusOr<Program> p = Compile(text, Kind::kMaskMod, env_);
    EXPECT_TRUE(p.ok()) << text << ": " << p.status();
    if (!p.ok()) return false;
    Evaluator<F> eval(*p, aux_);
    return eval.Keeps(bind_, kv);
  }

  std::vector<AuxTensor> aux_;
  Env env_;
  Bindings bind_;
};

using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(EvaluateTest, Types);

TYPED_TEST(EvaluateTest, Variables) {
  using F = TypeParam;
  EXPECT_EQ(this->Score("b * 10000 + h * 1000 + q * 100 + kv * 10 + hq", 5), F(13653));
  EXPECT_EQ(this->Score("hkv * 100 + S_q * 10 + S_kv", 0), F(138));
  EXPECT_EQ(this->Score("s", 0, 2.5), F(2.5));
  EXPECT_EQ(this->Score("doc[kv] * 100 + bias[b, kv]", 4), F(114));
  EXPECT_TRUE(this->Keeps("doc[kv] == doc[q - 1]", 5));
  EXPECT_FALSE(this->Keeps("doc[kv] == doc[q - 1]", 2));
}

TYPED_TEST(EvaluateTest, IntegersWrapAndDivideByZeroIsZero) {
  using F = TypeParam;
  EXPECT_TRUE(this->Keeps("9223372036854775807 + kv == -9223372036854775807 - 1 + (kv - 1)", 1));
  EXPECT_TRUE(this->Keeps("9223372036854775807 * 2 == -2", 0));
  EXPECT_TRUE(this->Keeps("-(-9223372036854775807 - 1) == -9223372036854775807 - 1", 0));
  EXPECT_TRUE(this->Keeps("abs(-9223372036854775807 - 1) < 0", 0));  // abs wraps too
  EXPECT_TRUE(this->Keeps("(-9223372036854775807 - 1) / -1 == -9223372036854775807 - 1", 0));
  EXPECT_TRUE(this->Keeps("(-9223372036854775807 - 1) % -1 == 0", 0));
  EXPECT_TRUE(this->Keeps("(-9223372036854775807 - 1) / (kv - 2) == -9223372036854775807 - 1", 3));
  EXPECT_EQ(this->Score("kv / 0", 5), F(0));
  EXPECT_EQ(this->Score("kv % 0", 5), F(0));
  EXPECT_EQ(this->Score("kv / (kv - 5)", 5), F(0));
  EXPECT_EQ(this->Score("-7 / 2", 0), F(-3));  // truncation toward zero, as in C
  EXPECT_EQ(this->Score("-7 % 2", 0), F(-1));
  EXPECT_EQ(this->Score("7 % -2", 0), F(1));
  EXPECT_EQ(this->Score("kv % 3", 7), F(1));
  EXPECT_EQ(this->Score("abs(q - kv * 2)", 7), F(8));
  EXPECT_EQ(this->Score("min(q, kv) * 10 + max(q, kv)", 2), F(26));
}

TYPED_TEST(EvaluateTest, PromotionFollowsC) {
  using F = TypeParam;
  EXPECT_EQ(this->Score("kv / 2 * 1.0", 5), F(2));  // integer division first
  EXPECT_EQ(this->Score("kv * 1.0 / 2", 5), F(2.5));
  EXPECT_EQ(this->Score("1 / 2 + 0.5", 0), F(0.5));
  EXPECT_EQ(this->Score("kv < 3 ? 1 : 2.5", 2), F(1));
  EXPECT_EQ(this->Score("kv < 3 ? 1 : 2.5", 3), F(2.5));
  EXPECT_EQ(this->Score("kv < 3 ? 7 / 2 : 0.0", 2), F(3));  // the branch is int, then promoted
  EXPECT_EQ(this->Score("max(kv, 2.5)", 1), F(2.5));
  EXPECT_EQ(this->Score("min(kv, 2.5)", 1), F(1));
  EXPECT_TRUE(this->Keeps("kv == 2.0", 2));
  EXPECT_TRUE(this->Keeps("kv < 2.5", 2));
  // 2^53 + 1 is exact in int64 but not as a float: compared as floats, it equals 2^53.
  EXPECT_TRUE(this->Keeps("9007199254740993 == 9007199254740992.0", 0));
  EXPECT_FALSE(this->Keeps("9007199254740993 == 9007199254740992", 0));
  EXPECT_EQ(this->Score("0.1", 0), static_cast<F>(0.1));
  EXPECT_EQ(this->Score("1e-3 * kv", 3), static_cast<F>(1e-3) * F(3));
}

TYPED_TEST(EvaluateTest, Functions) {
  using F = TypeParam;
  EXPECT_EQ(this->Score("sigmoid(0)", 0), F(0.5));
  EXPECT_EQ(this->Score("sigmoid(s)", 0, 2), F(1) / (F(1) + std::exp(F(-2))));
  EXPECT_EQ(this->Score("sigmoid(s)", 0, -1000), F(0));
  EXPECT_EQ(this->Score("sigmoid(s)", 0, 1000), F(1));
  EXPECT_EQ(this->Score("exp2(3)", 0), F(8));
  EXPECT_EQ(this->Score("log2(kv)", 8 - 1), std::log2(F(7)));
  EXPECT_EQ(this->Score("log2(8.0)", 0), F(3));
  EXPECT_EQ(this->Score("exp(s)", 0, 1), std::exp(F(1)));
  EXPECT_EQ(this->Score("log(s)", 0, 2), std::log(F(2)));
  EXPECT_EQ(this->Score("sqrt(kv)", 4), F(2));
  EXPECT_EQ(this->Score("tanh(s)", 0, 0.5), std::tanh(F(0.5)));
  EXPECT_EQ(this->Score("abs(s)", 0, -2.5), F(2.5));
  EXPECT_TRUE(std::isnan(this->Score("log(-1)", 0)));
  EXPECT_TRUE(std::isnan(this->Score("sqrt(-1)", 0)));
  EXPECT_EQ(this->Score("log(0)", 0), -std::numeric_limits<F>::infinity());
  EXPECT_EQ(this->Score("1.0 / 0", 0), std::numeric_limits<F>::infinity());
  EXPECT_EQ(this->Score("-1.0 / kv", 0), -std::numeric_limits<F>::infinity());
  EXPECT_TRUE(std::isnan(this->Score("s / 0", 0, 0)));
  EXPECT_TRUE(std::isnan(this->Score("0.0 / 0.0", 0)));
}

TYPED_TEST(EvaluateTest, FloorAndCeilSaturateAndMapNaNToZero) {
  using F = TypeParam;
  EXPECT_EQ(this->Score("floor(s)", 0, -1.5), F(-2));
  EXPECT_EQ(this->Score("ceil(s)", 0, -1.5), F(-1));
  EXPECT_EQ(this->Score("floor(s)", 0, 2.75), F(2));
  EXPECT_EQ(this->Score("ceil(s)", 0, 2.25), F(3));
  EXPECT_EQ(this->Score("floor(s)", 0, kNaN), F(0));
  EXPECT_EQ(this->Score("ceil(s)", 0, kNaN), F(0));
  EXPECT_TRUE(this->Keeps("floor(3e38) == 9223372036854775807", 0));
  EXPECT_TRUE(this->Keeps("ceil(-3e38) == -9223372036854775807 - 1", 0));
  EXPECT_TRUE(this->Keeps("floor(9223372036854775807.0) == 9223372036854775807", 0));
  EXPECT_TRUE(this->Keeps("floor(exp(1000.0)) == 9223372036854775807", 0));  // +inf
  EXPECT_TRUE(this->Keeps("ceil(-exp(1000.0)) == -9223372036854775807 - 1", 0));
  EXPECT_TRUE(this->Keeps("floor(log(-1)) == 0", 0));
  EXPECT_EQ(this->Score("floor(s) == 9223372036854775807 ? 1 : 0", 0, kInf), F(1));
  EXPECT_EQ(this->Score("floor(kv)", 5), F(5));  // an int passes through
}

TYPED_TEST(EvaluateTest, MinAndMaxIgnoreOneNaN) {
  using F = TypeParam;
  EXPECT_EQ(this->Score("min(s, 1.0)", 0, kNaN), F(1));
  EXPECT_EQ(this->Score("max(s, 1.0)", 0, kNaN), F(1));
  EXPECT_EQ(this->Score("min(1.0, s)", 0, kNaN), F(1));
  EXPECT_EQ(this->Score("max(kv, s)", 3, kNaN), F(3));
  EXPECT_TRUE(std::isnan(this->Score("min(s, s)", 0, kNaN)));
  EXPECT_EQ(this->Score("max(s, log(-1))", 0, 1), F(1));
  EXPECT_EQ(this->Score("min(s, -2.0)", 0, -kInf), -std::numeric_limits<F>::infinity());
  // NaN compares false except with !=.
  EXPECT_FALSE(this->Keeps("log(-1) < 1.0 || log(-1) >= 1.0 || log(-1) == log(-1)", 0));
  EXPECT_TRUE(this->Keeps("log(-1) != log(-1)", 0));
}

TYPED_TEST(EvaluateTest, BooleansAndSelect) {
  using F = TypeParam;
  EXPECT_TRUE(this->Keeps("!(kv < 3)", 3));
  EXPECT_FALSE(this->Keeps("!(kv < 3)", 2));
  EXPECT_TRUE(this->Keeps("kv < 16 || kv <= q", 7));
  EXPECT_TRUE(this->Keeps("(kv < 2) == (q < 2)", 5));
  EXPECT_TRUE(this->Keeps("(kv < 2) != (q < 7)", 5));
  EXPECT_TRUE(this->Keeps("kv < 3 ? q > 5 : q < 5", 1));
  EXPECT_FALSE(this->Keeps("kv < 3 ? q > 5 : q < 5", 4));
  EXPECT_EQ(this->Score("kv < 3 && q > 5 ? s : -s", 4, 1.5), F(-1.5));
}

// Scores / Mask over a row equal Score / Keeps pair by pair, for rows of every length around
// kLanes and starting anywhere.
template <typename F>
void ExpectRowsMatchPairs(uint64_t seed) {
  std::vector<AuxTensor> aux = {MakeAux("doc", {300}, std::vector<float>(300, 0.0f)),
                                MakeAux("t", {3, 5}, std::vector<float>(15, 0.0f))};
  for (int i = 0; i < 300; ++i) aux[0].values[i] = static_cast<float>(i / 37);
  for (int i = 0; i < 15; ++i) aux[1].values[i] = static_cast<float>(i) * 0.75f - 3;
  aux[0] = MakeAux("doc", {300}, aux[0].values);
  aux[1] = MakeAux("t", {3, 5}, aux[1].values);
  Env env;
  env.batch = 2;
  env.output_heads = env.query_heads = env.kv_heads = 3;
  env.seq_q = 5;
  env.seq_kv = 300;
  env.aux = &aux;
  const double kS[] = {0.0, -1.5, 2.25, 1e30, -kInf, kInf, kNaN, 7.0, -0.0, 1e-3};
  for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
    testing::RandomExpr gen(seed, kind, &aux);
    int compiled = 0;
    for (int trial = 0; trial < 60; ++trial) {
      const std::string text = gen.Next(4);
      absl::StatusOr<Program> p = Compile(text, kind, env);
      if (!p.ok()) continue;
      ++compiled;
      Evaluator<F> rows(*p, aux), pairs(*p, aux);
      Bindings bind;
      bind.b = trial % 2;
      bind.h = bind.hq = bind.hkv = trial % 3;
      bind.q = 295 + trial % 5;
      for (int64_t n : {1, 63, 64, 65, 150, 200}) {
        const int64_t kv0 = (trial * 7) % 50;
        if (kind == Kind::kScoreMod) {
          std::vector<F> s(n);
          for (int64_t l = 0; l < n; ++l) s[l] = static_cast<F>(kS[(l + trial) % 10]);
          std::vector<F> out = s;
          rows.Scores(bind, kv0, n, out.data());
          for (int64_t l = 0; l < n; ++l) {
            const F want = pairs.Score(bind, kv0 + l, s[l]);
            ASSERT_TRUE(std::memcmp(&want, &out[l], sizeof(F)) == 0 ||
                        (std::isnan(want) && std::isnan(out[l])))
                << text << " n=" << n << " lane " << l << ": " << out[l] << " vs " << want;
          }
        } else {
          std::vector<uint8_t> keep(n, 7);
          rows.Mask(bind, kv0, n, keep.data());
          for (int64_t l = 0; l < n; ++l) {
            ASSERT_EQ(keep[l], pairs.Keeps(bind, kv0 + l) ? 1 : 0)
                << text << " n=" << n << " lane " << l;
          }
        }
      }
    }
    EXPECT_GT(compiled, 30) << "the generator should mostly produce valid programs";
  }
}

TEST(EvaluateRowsTest, FloatRowsMatchPairs) { ExpectRowsMatchPairs<float>(1); }
TEST(EvaluateRowsTest, DoubleRowsMatchPairs) { ExpectRowsMatchPairs<double>(2); }

}  // namespace
}  // namespace attnbench::expr

namespace attnbench::expr {
namespace {

// ScoresAndSlopes' derivative against central differences in double, for every rule that carries
// one (each expression exercises one or two), at scores away from any kink, over a whole row so
// that per-lane and row-invariant operands both appear; and the float slope against the double.
TEST(ScoreSlopeTest, MatchesCentralDifferences) {
  const std::vector<AuxTensor> aux = {testing::MakeAux("w", {4}, {0.5f, -1.25f, 2.0f, 0.75f})};
  Env env;
  env.output_heads = env.query_heads = 4;
  env.seq_q = env.seq_kv = 16;
  env.aux = &aux;
  const char* const texts[] = {
      "s",
      "-s + 3",
      "s * s - 2 * s",
      "s * w[h] + kv",
      "(s + 1) / (s * s + 2)",
      "3 / (s - 10)",
      "exp(s / 2) + exp2(0.5 * s)",
      "log(s * s + 1) + log2(s * s + 3)",
      "sqrt(s * s + 1)",
      "tanh(s) + sigmoid(2 * s)",
      "abs(s - 0.3) + abs(kv - 5.5)",
      "min(s, 0.7) + max(s, kv - 8)",
      "s > 0.2 ? s * s : -s",
      "(q - kv) % 3 == 0 ? 2 * s : s / 4",
      "floor(s) + s",
      "s * (kv + 0.5) / (h + 1)",
  };
  const double scores[] = {-2.37, -0.61, 0.47, 1.93};
  for (const char* text : texts) {
    absl::StatusOr<Program> p = Compile(text, Kind::kScoreMod, env);
    ASSERT_TRUE(p.ok()) << text << ": " << p.status();
    Evaluator<double> f64(*p, aux);
    Evaluator<float> f32(*p, aux);
    for (double s0 : scores) {
      for (int h = 0; h < 4; ++h) {
        Bindings bind;
        bind.h = bind.hq = h;
        bind.q = 9;
        std::vector<double> s(16, s0), slope(16), up(16, s0 + 1e-6), down(16, s0 - 1e-6);
        f64.ScoresAndSlopes(bind, 0, 16, s.data(), slope.data());
        f64.Scores(bind, 0, 16, up.data());
        f64.Scores(bind, 0, 16, down.data());
        std::vector<float> s32(16, static_cast<float>(s0)), slope32(16);
        f32.ScoresAndSlopes(bind, 0, 16, s32.data(), slope32.data());
        for (int kv = 0; kv < 16; ++kv) {
          const double numeric = (up[kv] - down[kv]) / 2e-6;
          EXPECT_NEAR(slope[kv], numeric, 1e-5 * std::max(1.0, std::fabs(numeric)))
              << text << " at s=" << s0 << " h=" << h << " kv=" << kv;
          EXPECT_NEAR(slope32[kv], slope[kv], 1e-4 * std::max(1.0, std::fabs(slope[kv])))
              << text << " (float) at s=" << s0 << " h=" << h << " kv=" << kv;
          // The value is what Scores gives.
          double value = s0;
          f64.Scores(bind, kv, 1, &value);
          EXPECT_EQ(s[kv], value) << text;
        }
      }
    }
  }
}

}  // namespace
}  // namespace attnbench::expr
