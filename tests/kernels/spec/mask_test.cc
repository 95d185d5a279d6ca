// Mask predicates (§3) with bottom-right alignment, the tile coverage and fill helpers against
// brute force, probabilistic block determinism and rates, and the score modifiers (§4).
#include "kernels/spec/mask.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/modifiers.h"
#include "tests/kernels/naive_attention.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

Problem MaskProblem(int64_t sq, int64_t skv, MaskKind kind) {
  Problem p = testing::SmallProblem();
  p.seq_len_q = sq;
  p.seq_len_kv = skv;
  p.mask.kind = kind;
  return NormalizeProblem(p);
}

TEST(MaskTest, CausalAlignsBottomRight) {
  const Problem p = MaskProblem(3, 5, MaskKind::kCausal);
  // Query 0 sits at position 2: it sees keys 0..2.
  EXPECT_TRUE(KeepsPair(p, 0, 0, 0, 2));
  EXPECT_FALSE(KeepsPair(p, 0, 0, 0, 3));
  EXPECT_TRUE(KeepsPair(p, 0, 0, 2, 4));
  // More queries than keys: the first S_q - S_kv queries see nothing.
  const Problem q = MaskProblem(5, 3, MaskKind::kCausal);
  EXPECT_FALSE(KeepsPair(q, 0, 0, 1, 0));
  EXPECT_TRUE(KeepsPair(q, 0, 0, 2, 0));
  EXPECT_FALSE(KeepsPair(q, 0, 0, 2, 1));
}

TEST(MaskTest, SlidingWindow) {
  Problem p = MaskProblem(4, 6, MaskKind::kSlidingWindow);
  p.mask.left_tokens = 1;
  p.mask.right_tokens = 0;
  // Query 1 sits at 3: keeps keys 2 and 3.
  std::vector<bool> row;
  for (int j = 0; j < 6; ++j) row.push_back(KeepsPair(p, 0, 0, 1, j));
  EXPECT_EQ(row, (std::vector<bool>{false, false, true, true, false, false}));
  p.mask.left_tokens.reset();
  p.mask.right_tokens = 1;
  row.clear();
  for (int j = 0; j < 6; ++j) row.push_back(KeepsPair(p, 0, 0, 1, j));
  EXPECT_EQ(row, (std::vector<bool>{true, true, true, true, true, false}));
  p.mask.right_tokens.reset();
  for (int j = 0; j < 6; ++j) EXPECT_TRUE(KeepsPair(p, 0, 0, 0, j));
}

TEST(MaskTest, ExplicitBlocks) {
  Problem p = MaskProblem(8, 8, MaskKind::kBlockSparse);
  p.mask.query_block_tokens = 4;
  p.mask.kv_block_tokens = 2;
  p.mask.blocks = {{1, 0}, {0, 3}, {1, 0}};
  EXPECT_TRUE(KeepsPair(p, 0, 0, 5, 1));   // block (1, 0)
  EXPECT_TRUE(KeepsPair(p, 0, 0, 0, 7));   // block (0, 3)
  EXPECT_FALSE(KeepsPair(p, 0, 0, 0, 5));  // block (0, 2)
  p.mask.intersect_causal = true;
  EXPECT_TRUE(KeepsPair(p, 0, 0, 5, 1));
  EXPECT_FALSE(KeepsPair(p, 0, 0, 0, 7));  // above the diagonal
}

Problem Probabilistic(int64_t sq, int64_t skv, double c, double alpha, uint64_t seed) {
  Problem p = MaskProblem(sq, skv, MaskKind::kProbabilisticBlockSparse);
  p.mask.query_block_tokens = 4;
  p.mask.kv_block_tokens = 4;
  p.mask.c_coefficient = c;
  p.mask.alpha = alpha;
  p.mask.seed = seed;
  return p;
}

TEST(MaskTest, ProbabilisticKeepsDiagonalBandAndIsCausal) {
  const Problem p = Probabilistic(64, 64, 1e-9, 1.0, 5);
  for (int64_t i = 0; i < 64; ++i) {
    for (int64_t j = 0; j < 64; ++j) {
      // With a negligible c only the diagonal blocks survive, and only their causal part.
      EXPECT_EQ(KeepsPair(p, 1, 2, i, j), j <= i && j / 4 == i / 4) << i << "," << j;
    }
  }
  const Problem all = Probabilistic(64, 64, 1.0, 0.0, 5);  // p(d) = 1: plain causal
  for (int64_t i = 0; i < 64; ++i) {
    for (int64_t j = 0; j < 64; ++j) EXPECT_EQ(KeepsPair(all, 0, 0, i, j), j <= i);
  }
}

TEST(MaskTest, ProbabilisticIsDeterministicAndFollowsP) {
  const Problem p = Probabilistic(512, 512, 0.9, 0.5, 77);
  const MaskEvaluator a(p), b(p);
  int kept_d3 = 0, total_d3 = 0;
  for (int h = 0; h < 16; ++h) {
    for (int64_t r = 0; r < 128; ++r) {
      for (int64_t c = 0; c < 128; ++c) {
        ASSERT_EQ(a.BlockSelected(1, h, r, c), b.BlockSelected(1, h, r, c));
        if (r - c == 3) {
          ++total_d3;
          kept_d3 += a.BlockSelected(1, h, r, c);
        }
      }
    }
  }
  const double expected = 0.9 / std::pow(4.0, 0.5);  // p(3) = 0.45
  EXPECT_NEAR(static_cast<double>(kept_d3) / total_d3, expected, 0.03);
  // A different mask seed draws different blocks; heads and batches differ too.
  const Problem other = Probabilistic(512, 512, 0.9, 0.5, 78);
  const MaskEvaluator o(other);
  int differ_seed = 0, differ_head = 0;
  for (int64_t r = 10; r < 128; ++r) {
    for (int64_t c = 0; c < r - 1; ++c) {
      differ_seed += a.BlockSelected(0, 0, r, c) != o.BlockSelected(0, 0, r, c);
      differ_head += a.BlockSelected(0, 0, r, c) != a.BlockSelected(0, 1, r, c);
    }
  }
  EXPECT_GT(differ_seed, 100);
  EXPECT_GT(differ_head, 100);
}

TEST(MaskTest, MatchesTheIndependentPredicate) {
  std::vector<Problem> problems;
  for (auto [sq, skv] : {std::pair<int64_t, int64_t>{13, 29}, {29, 13}, {17, 17}}) {
    problems.push_back(MaskProblem(sq, skv, MaskKind::kCausal));
    Problem w = MaskProblem(sq, skv, MaskKind::kSlidingWindow);
    w.mask.left_tokens = 3;
    w.mask.right_tokens = 2;
    problems.push_back(w);
    Problem bs = MaskProblem(sq, skv, MaskKind::kBlockSparse);
    bs.mask.query_block_tokens = 5;
    bs.mask.kv_block_tokens = 3;
    bs.mask.blocks = {{0, 0}, {1, 2}, {2, 1}, {0, 4}};
    bs.mask.intersect_causal = sq == skv;
    problems.push_back(bs);
    Problem pr = Probabilistic(sq, skv, 0.7, 1.2, 3);
    pr.mask.query_block_tokens = 3;
    pr.mask.kv_block_tokens = 2;
    problems.push_back(pr);
  }
  for (const Problem& p : problems) {
    for (int h = 0; h < 3; ++h) {
      for (int64_t i = 0; i < p.seq_len_q; ++i) {
        for (int64_t j = 0; j < p.seq_len_kv; ++j) {
          ASSERT_EQ(KeepsPair(p, 1, h, i, j), testing::NaiveKeeps(p, 1, h, i, j))
              << MaskName(p.mask.kind) << " " << p.seq_len_q << "x" << p.seq_len_kv << " (" << i
              << ", " << j << ")";
        }
      }
    }
  }
}

TEST(MaskTest, TileCoverageAndFillMatchBruteForce) {
  std::mt19937 rng(1);
  std::vector<Problem> problems;
  problems.push_back(MaskProblem(37, 53, MaskKind::kNone));
  problems.push_back(MaskProblem(37, 53, MaskKind::kCausal));
  problems.push_back(MaskProblem(53, 37, MaskKind::kCausal));
  Problem w = MaskProblem(37, 53, MaskKind::kSlidingWindow);
  w.mask.left_tokens = 4;
  w.mask.right_tokens = 1;
  problems.push_back(w);
  w.mask.left_tokens.reset();
  problems.push_back(w);
  Problem bs = MaskProblem(37, 53, MaskKind::kBlockSparse);
  bs.mask.query_block_tokens = 6;
  bs.mask.kv_block_tokens = 7;
  bs.mask.blocks = {{0, 0}, {1, 3}, {5, 7}, {6, 2}, {3, 3}};
  problems.push_back(bs);
  bs.mask.intersect_causal = true;
  problems.push_back(bs);
  Problem pr = Probabilistic(37, 53, 0.6, 1.0, 11);
  pr.mask.query_block_tokens = 5;
  pr.mask.kv_block_tokens = 3;
  problems.push_back(pr);
  for (const Problem& p : problems) {
    const MaskEvaluator eval(p);
    int seen[3] = {0, 0, 0};
    for (int trial = 0; trial < 400; ++trial) {
      const int64_t i0 = rng() % p.seq_len_q, j0 = rng() % p.seq_len_kv;
      const int64_t i1 = i0 + 1 + rng() % std::min<int64_t>(12, p.seq_len_q - i0);
      const int64_t j1 = j0 + 1 + rng() % std::min<int64_t>(12, p.seq_len_kv - j0);
      int kept = 0;
      std::vector<uint8_t> fill((i1 - i0) * (j1 - j0));
      eval.FillTile(1, 2, i0, i1, j0, j1, fill.data());
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) {
          const bool k = eval.Keeps(1, 2, i, j);
          kept += k;
          ASSERT_EQ(fill[(i - i0) * (j1 - j0) + (j - j0)], k);
        }
      }
      const TileCoverage expected = kept == 0                       ? TileCoverage::kNone
                                    : kept == (i1 - i0) * (j1 - j0) ? TileCoverage::kAll
                                                                    : TileCoverage::kPartial;
      ASSERT_EQ(eval.Coverage(1, 2, i0, i1, j0, j1), expected)
          << MaskName(p.mask.kind) << " tile [" << i0 << "," << i1 << ")x[" << j0 << "," << j1
          << ")";
      ++seen[static_cast<int>(expected)];
    }
    if (p.mask.kind != MaskKind::kNone) {
      EXPECT_GT(seen[1], 0) << MaskName(p.mask.kind);
    }
  }
}

TEST(ModifiersTest, GeometricAlibiSlopes) {
  Alibi geometric{true, AlibiSchedule::kGeometric, std::nullopt};
  const std::vector<double> eight = AlibiSlopes(geometric, 8);
  for (int h = 0; h < 8; ++h) EXPECT_DOUBLE_EQ(eight[h], std::pow(2.0, -(h + 1)));
  // Six heads: the four of n = 4, then slopes 0 and 2 of the n = 8 schedule.
  const std::vector<double> six = AlibiSlopes(geometric, 6);
  const std::vector<double> expected = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  ASSERT_EQ(six.size(), expected.size());
  for (int h = 0; h < 6; ++h) EXPECT_DOUBLE_EQ(six[h], expected[h]);
  for (int n : {1, 3, 5, 12, 24}) {
    const std::vector<double> s = AlibiSlopes(geometric, n);
    const std::vector<double> paper = testing::NaiveAlibiSlopes(n);
    ASSERT_EQ(s.size(), paper.size());
    for (int h = 0; h < n; ++h) EXPECT_NEAR(s[h], paper[h], 1e-15) << n << " heads, head " << h;
  }
}

TEST(ModifiersTest, HarmonicAlibiSlopes) {
  const std::vector<double> s = AlibiSlopes({true, AlibiSchedule::kHarmonic, 0.5}, 4);
  EXPECT_EQ(s, (std::vector<double>{0.5, 0.25, 0.5 / 3, 0.125}));
}

TEST(ModifiersTest, RopeRotatesHalvesAndDependsOnRelativePosition) {
  const std::vector<double> inv = RopeInverseFrequencies(100.0, 4);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_DOUBLE_EQ(inv[1], 0.1);     // 100^(-2/4)
  double v[6] = {1, 0, 0, 0, 7, 7};  // elements 4 and 5 are past rotary_dims
  ApplyRope(v, 2, inv);
  EXPECT_DOUBLE_EQ(v[0], std::cos(2.0));
  EXPECT_DOUBLE_EQ(v[2], std::sin(2.0));  // element 0 pairs with element 0 + 2
  EXPECT_EQ(v[4], 7);
  // <R(m) q, R(n) k> depends on m - n only.
  const std::vector<double> inv8 = RopeInverseFrequencies(10000.0, 8);
  auto dot_at = [&](int64_t m, int64_t n) {
    double q[8] = {0.3, -1, 2, 0.5, 1, 1, -0.2, 0.7}, k[8] = {1, 0.1, -0.4, 2, 0, 1.5, 0.3, -1};
    ApplyRope(q, m, inv8);
    ApplyRope(k, n, inv8);
    double d = 0;
    for (int e = 0; e < 8; ++e) d += q[e] * k[e];
    return d;
  };
  EXPECT_NEAR(dot_at(10, 3), dot_at(1007, 1000), 1e-9);
  EXPECT_GT(std::fabs(dot_at(10, 3) - dot_at(10, 4)), 1e-3);
  // The float path with precomputed cos/sin agrees with the double one.
  float f[4] = {1, 2, 3, 4};
  float cs[4];
  RopeCosSin(123456, inv, cs);
  ApplyRope(f, cs, 2);
  double d[4] = {1, 2, 3, 4};
  ApplyRope(d, 123456, inv);
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(f[e], d[e], 1e-5);
}

TEST(ModifiersTest, Softcap) {
  EXPECT_DOUBLE_EQ(Softcap(0.0, 5.0), 0.0);
  EXPECT_NEAR(Softcap(1000.0, 5.0), 5.0, 1e-12);
  EXPECT_NEAR(Softcap(0.01, 5.0), 0.01, 1e-6);
  EXPECT_DOUBLE_EQ(Softcap(-2.0, 3.0), -3.0 * std::tanh(2.0 / 3.0));
}

TEST(ModifiersTest, RopeTransposeIsTheInverseRotationAndItsAdjoint) {
  const std::vector<double> inv = RopeInverseFrequencies(50.0, 4);  // dimensions 4, 5 pass through
  const double x[6] = {0.3, -1.2, 2.0, 0.7, -0.4, 1.1}, y[6] = {1.5, 0.2, -0.8, 0.9, 2.2, -0.6};
  double rx[6], ty[6];
  std::copy(x, x + 6, rx);
  ApplyRope(rx, 37, inv);
  std::copy(y, y + 6, ty);
  ApplyRopeTranspose(ty, 37, inv);
  // <R x, y> = <x, R^T y>: what carries a gradient back through the rotation.
  double lhs = 0, rhs = 0;
  for (int e = 0; e < 6; ++e) {
    lhs += rx[e] * y[e];
    rhs += x[e] * ty[e];
  }
  EXPECT_NEAR(lhs, rhs, 1e-12);
  ApplyRopeTranspose(rx, 37, inv);
  for (int e = 0; e < 6; ++e) EXPECT_NEAR(rx[e], x[e], 1e-12) << e;
  EXPECT_EQ(ty[4], y[4]);
  // The float path agrees with the double one.
  float f[4] = {1, 2, 3, 4};
  float cs[4];
  RopeCosSin(987, inv, cs);
  ApplyRopeTranspose(f, cs, 2);
  double d[4] = {1, 2, 3, 4};
  ApplyRopeTranspose(d, 987, inv);
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(f[e], d[e], 1e-5);
}

TEST(ModifiersTest, SoftcapDerivativeFromTheCappedScore) {
  for (double t : {-30.0, -2.5, -0.1, 0.0, 0.7, 4.0, 12.0}) {
    const double cap = 5.0, h = 1e-5;
    const double numeric = (Softcap(t + h, cap) - Softcap(t - h, cap)) / (2 * h);
    EXPECT_NEAR(SoftcapDerivative(Softcap(t, cap), cap), numeric, 1e-8) << t;
    EXPECT_NEAR(SoftcapDerivative(Softcap(static_cast<float>(t), 5.0f), 5.0f), numeric, 1e-6) << t;
  }
}

}  // namespace
}  // namespace attnbench
