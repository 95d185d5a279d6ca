// Hostile text through the whole library, cheaply (well under 10 s in Debug): random bytes, random
// tokens, valid expressions mutated by deletion, insertion, duplication and splicing, and the
// classic attacks (deep nesting, huge literals, division by zero, NaN-producing functions).
// Compile must never crash or hang and must fail only with INVALID_ARGUMENT "column C: ..." with
// C inside the text (or one past it); a program that compiles must evaluate in float and double,
// classify a tile and emit CUDA source without crashing. ASan builds make "never crash" strict.
#include <chrono>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "kernels/expr/cuda_source.h"
#include "kernels/expr/evaluate.h"
#include "kernels/expr/parser.h"
#include "kernels/expr/tile_bounds.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::expr {
namespace {

using testing::MakeAux;

class FuzzTest : public ::testing::Test {
 protected:
  FuzzTest() {
    aux_ = {MakeAux("doc", {8}, {0, 0, 1, 1, 2, 2, 3, 3}),
            MakeAux("t", {2, 8}, std::vector<float>(16, 0.5f))};
    env_.batch = 2;
    env_.output_heads = env_.query_heads = 2;
    env_.kv_heads = 1;
    env_.seq_q = 4;
    env_.seq_kv = 8;
    env_.aux = &aux_;
  }

  // Compiles `text` as both kinds and runs whatever compiles; counts the outcomes.
  void Try(const std::string& text) {
    for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
      absl::StatusOr<Program> p = Compile(text, kind, env_);
      if (!p.ok()) {
        ++failed_;
        ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << text;
        const std::string m(p.status().message());
        ASSERT_EQ(m.rfind("column ", 0), 0u) << text << ": " << m;
        int column = 0;
        const size_t colon = m.find(':');
        ASSERT_NE(colon, std::string::npos) << m;
        ASSERT_TRUE(absl::SimpleAtoi(m.substr(7, colon - 7), &column)) << m;
        ASSERT_GE(column, 1) << text << ": " << m;
        ASSERT_LE(column, static_cast<int>(std::min<size_t>(text.size(), kMaxTextBytes)) + 1)
            << text << ": " << m;
        continue;
      }
      ++compiled_;
      Bindings bind;
      bind.b = 1;
      bind.h = 1;
      bind.q = 7;
      if (kind == Kind::kScoreMod) {
        float s[10] = {0, -1, 1e30f, -1e30f, 0.5f, 3, -0.0f, 1e-40f, 2, 100};
        double d[10] = {0, -1, 1e300, -1e300, 0.5, 3, -0.0, 1e-310, 2, 100};
        Evaluator<float>(*p, aux_).Scores(bind, 0, 10, s);
        Evaluator<double>(*p, aux_).Scores(bind, 0, 10, d);
      } else {
        uint8_t keep[8];
        Evaluator<float>(*p, aux_).Mask(bind, 0, 8, keep);
        MaskTileBounds(*p, aux_, bind, 4, 8, 0, 8);
      }
      ASSERT_FALSE(CudaFunction(*p, "f").empty());
    }
  }

  std::vector<AuxTensor> aux_;
  Env env_;
  int compiled_ = 0, failed_ = 0;
};

TEST_F(FuzzTest, HostileText) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> hostile = {std::string(10000, '('),
                                            std::string(10000, '(') + "1" + std::string(10000, ')'),
                                            std::string(4096, '('),
                                            std::string(4000, '-') + "1",
                                            std::string(4000, '!') + "q",
                                            std::string(4000, '+') + "1",
                                            std::string(4096, '9'),
                                            std::string(4096, '0'),
                                            "1" + std::string(300, '0') + ".0",
                                            "0." + std::string(4000, '0') + "1",
                                            std::string(4090, '1') + "e9999",
                                            "1e-99999",
                                            "1e+99999",
                                            "99999999999999999999",
                                            "9223372036854775807 + 1",
                                            "-9223372036854775808",
                                            "kv / 0",
                                            "kv % 0",
                                            "1.0 / 0",
                                            "0.0 / 0",
                                            "log(-1)",
                                            "sqrt(-1)",
                                            "log(0.0)",
                                            "exp(1e30)",
                                            "exp(-1e30) * exp(1e30)",
                                            "floor(exp(100.0))",
                                            "doc[floor(log(-1.0))]",
                                            "doc[kv % 0]",
                                            "t[1, floor(0.0 / 0)]",
                                            "doc[9223372036854775807]",
                                            "doc[-9223372036854775807 - 1]",
                                            "doc[kv * 9223372036854775807]",
                                            "min(max(kv, 0), 7) ? 1 : 0",
                                            std::string(1, '\0'),
                                            std::string("kv\0 < 1", 7),
                                            "\xff\xfe",
                                            "kv < 1 \x80",
                                            "kv <\n 1",
                                            "a[",
                                            "a[1,",
                                            "f(",
                                            "min(1,",
                                            "(((((",
                                            ")))))",
                                            "?:",
                                            "1 ? : 2",
                                            "?",
                                            ",",
                                            "doc[1][2]",
                                            "doc[[1]]",
                                            "min(min(min(min(1,2),3),4),5)",
                                            "-",
                                            "--1",
                                            "!!!!(1<2)",
                                            "1e",
                                            "1e+",
                                            ".",
                                            "..5",
                                            "._",
                                            "_",
                                            "__",
                                            "S_q_",
                                            "1.2.3",
                                            "0x10",
                                            "1f",
                                            "1_000"};
  for (const std::string& text : hostile) {
    Try(text);
    if (HasFatalFailure()) return;
  }
  // Every prefix and suffix of a valid expression that uses every construct.
  const std::string full =
      "kv < 4 || (doc[min(max(q - 1, 0), 7)] == doc[kv] && !(t[b, kv] > 0.5e1) ? "
      "sigmoid(s) * exp2(-abs(q - kv) / 2.) + floor(log2(1e-3 + .5)) % 3 : max(tanh(s), "
      "sqrt(ceil(exp(s) - log(S_kv * 1.0))))) != (hq >= hkv)";
  for (size_t n = 0; n <= full.size(); ++n) {
    Try(full.substr(0, n));
    Try(full.substr(n));
    if (HasFatalFailure()) return;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(FuzzTest, RandomAndMutatedText) {
  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(99);
  const auto pick = [&rng](size_t n) { return static_cast<size_t>(rng() % n); };
  static const char* kTokens[] = {"s",       "b",     "h",    "q",
                                  "kv",      "hq",    "hkv",  "S_q",
                                  "S_kv",    "doc",   "t",    "min",
                                  "max",     "abs",   "exp",  "exp2",
                                  "log",     "log2",  "sqrt", "tanh",
                                  "sigmoid", "floor", "ceil", "(",
                                  ")",       "[",     "]",    ",",
                                  "?",       ":",     "+",    "-",
                                  "*",       "/",     "%",    "<",
                                  "<=",      ">",     ">=",   "==",
                                  "!=",      "&&",    "||",   "!",
                                  "0",       "1",     "7",    "1e-3",
                                  ".5",      "2.",    "3e38", "9223372036854775807",
                                  "zz",      " "};
  constexpr size_t kNumTokens = sizeof(kTokens) / sizeof(kTokens[0]);
  // Random bytes, mostly printable.
  for (int i = 0; i < 3000; ++i) {
    std::string text(pick(40), ' ');
    for (char& c : text) c = static_cast<char>(pick(4) == 0 ? rng() : 32 + pick(95));
    Try(text);
    if (HasFatalFailure()) return;
  }
  // Random token strings.
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    for (size_t n = pick(30); n > 0; --n) text += kTokens[pick(kNumTokens)];
    Try(text);
    if (HasFatalFailure()) return;
  }
  // Valid expressions, mutated.
  std::vector<std::string> valid;
  for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
    testing::RandomExpr gen(kind == Kind::kScoreMod ? 5 : 6, kind, &aux_);
    for (int i = 0; i < 100; ++i) valid.push_back(gen.Next(1 + i % 4));
  }
  for (int i = 0; i < 8000; ++i) {
    std::string text = valid[pick(valid.size())];
    for (size_t m = 1 + pick(3); m > 0; --m) {
      const size_t at = text.empty() ? 0 : pick(text.size());
      switch (pick(6)) {
        case 0:  // delete a span
          text.erase(at, 1 + pick(4));
          break;
        case 1:  // insert a token
          text.insert(at, kTokens[pick(kNumTokens)]);
          break;
        case 2:  // duplicate a span
          text.insert(at, text.substr(at, 1 + pick(20)));
          break;
        case 3:  // splice in part of another expression
          text.insert(at, valid[pick(valid.size())].substr(0, pick(30)));
          break;
        case 4:  // flip a byte
          if (!text.empty()) text[at] = static_cast<char>(rng());
          break;
        default:  // wrap in deep parentheses or negations
          text = std::string(pick(60), pick(2) ? '(' : '-') + text;
          break;
      }
    }
    Try(text);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(compiled_, 200);  // the mutations keep some programs valid, so evaluation runs
  EXPECT_GT(failed_, 10000);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace attnbench::expr
