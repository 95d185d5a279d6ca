// Soundness of the interval analysis (kernels/expr/interval.h) and of the tile classifier
// (tile_bounds.h) by brute force: for many random well-typed programs over small problems, every
// value the interpreter computes, in float and in double, at every node and every point lies in
// that node's interval (Program.ranges); MaskTileBounds never says kNone for a tile with a kept
// pair nor kAll for a tile with a dropped one. Plus hand-written cases for the corners that
// broke it (int64 minimum, float32 overflow, 0 * inf) and for the precision kernels rely on.
#include "kernels/expr/interval.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "kernels/expr/evaluate.h"
#include "kernels/expr/tile_bounds.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::expr {
namespace {

using testing::MakeAux;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A program whose float root is 1 when node `id` of `p` lies in its interval, else 0, so a
// score_mod evaluation (which binds s) can test any node, whatever its type.
Program InRangeProbe(const Program& p, int id) {
  Program out = p;
  out.ast.nodes.resize(id + 1);
  out.varies.resize(id + 1);
  const Node& n = p.ast.nodes[id];
  const Interval& r = p.ranges[id];
  const auto add = [&out](Node node, bool varies) {
    out.ast.nodes.push_back(std::move(node));
    out.varies.push_back(varies);
    return static_cast<int>(out.ast.nodes.size()) - 1;
  };
  const bool v = p.varies[id];
  int cond = id;
  if (n.type == Type::kInt || n.type == Type::kBool) {
    Node lo, hi, ge, le, both;
    lo.op = hi.op = Op::kIntLit;
    lo.int_value = r.lo;
    hi.int_value = r.hi;
    ge.op = Op::kGe;
    le.op = Op::kLe;
    ge.type = le.type = both.type = Type::kBool;
    ge.a = le.a = id;
    ge.b = add(lo, false);
    le.b = add(hi, false);
    both.op = Op::kAnd;
    both.a = add(ge, v);
    both.b = add(le, v);
    cond = add(both, v);
  } else {
    // NaN when allowed, else flo <= x <= fhi (flo and fhi as floats of F; see the caller).
    Node lo, hi, ge, le, both, isnan, ok;
    lo.op = hi.op = Op::kFloatLit;
    lo.type = hi.type = Type::kFloat;
    lo.float_value = r.flo;
    hi.float_value = r.fhi;
    ge.op = Op::kGe;
    le.op = Op::kLe;
    isnan.op = Op::kNe;
    ge.type = le.type = both.type = isnan.type = ok.type = Type::kBool;
    ge.a = le.a = isnan.a = isnan.b = id;
    ge.b = add(lo, false);
    le.b = add(hi, false);
    both.op = Op::kAnd;
    both.a = add(ge, v);
    both.b = add(le, v);
    const int in_range = add(both, v);
    if (r.nan) {
      ok.op = Op::kOr;
      ok.a = in_range;
      ok.b = add(isnan, v);
      cond = add(ok, v);
    } else {
      cond = in_range;
    }
  }
  Node one, zero, select;
  one.op = zero.op = Op::kFloatLit;
  one.type = zero.type = select.type = Type::kFloat;
  one.float_value = 1;
  select.op = Op::kSelect;
  select.a = cond;
  select.b = add(one, false);
  select.c = add(zero, false);
  out.ast.root = add(select, v);
  return out;
}

struct Problem {
  Env env;
  std::vector<AuxTensor> aux;
};

std::vector<Problem> Problems() {
  std::vector<Problem> out(2);
  out[0].aux = {MakeAux("doc", {5}, {0, 0, 1, 1, 2}),
                MakeAux("t", {2, 3}, {-1.5f, 0, 3e38f, 1e-30f, 7, -2})};
  out[0].env.batch = 2;
  out[0].env.output_heads = out[0].env.query_heads = 2;
  out[0].env.kv_heads = 1;
  out[0].env.seq_q = 3;
  out[0].env.seq_kv = 5;
  // S_q > S_kv: query positions are negative.
  out[1].aux = {MakeAux("doc", {4}, {3, 3, 3, 3}), MakeAux("t", {3, 2}, {0.5f, -0.5f, 1, 2, 3, 4})};
  out[1].env.batch = 1;
  out[1].env.output_heads = 3;
  out[1].env.query_heads = 3;
  out[1].env.kv_heads = 3;
  out[1].env.seq_q = 6;
  out[1].env.seq_kv = 4;
  return out;
}

// Every node of `p` at every point of `prob`, evaluated in F, against its interval. The probe
// compares in F with the endpoints rounded to F, which is exact: an F value v >= flo is also
// >= the F nearest to flo (that is flo rounded down, or the least F above flo), and likewise
// for fhi.
template <typename F>
void ExpectNodesInRange(const Program& p, const Problem& prob, const std::string& text) {
  const double kS[] = {0.0, -1.5, 2.25, 1e30, -kInf, kInf, kNaN, -0.0, 3e38, 1e-3};
  const Env& e = prob.env;
  for (int id = 0; id < static_cast<int>(p.ast.nodes.size()); ++id) {
    Program probe = InRangeProbe(p, id);
    Evaluator<F> eval(probe, prob.aux);
    for (int64_t b = 0; b < e.batch; ++b) {
      for (int64_t h = 0; h < e.output_heads; ++h) {
        for (int64_t q = e.seq_kv - e.seq_q; q < e.seq_kv; ++q) {
          for (int shift = 0; shift < 3; ++shift) {
            Bindings bind;
            bind.b = b;
            bind.h = h;
            bind.hq = h % e.query_heads;
            bind.hkv = h % e.kv_heads;
            bind.q = q;
            std::vector<F> s(e.seq_kv);
            for (int64_t kv = 0; kv < e.seq_kv; ++kv)
              s[kv] = static_cast<F>(kS[((kv * 3 + shift + q) % 10 + 10) % 10]);
            std::vector<F> out = s;
            eval.Scores(bind, 0, e.seq_kv, out.data());
            for (int64_t kv = 0; kv < e.seq_kv; ++kv) {
              if (out[kv] == F(1)) continue;
              const Interval& r = p.ranges[id];
              std::ostringstream where;
              where << text << "\n  normalized " << p.normalized << "\n  node " << id << " ("
                    << OpSpelling(p.ast.nodes[id].op) << " op "
                    << static_cast<int>(p.ast.nodes[id].op) << ", type "
                    << TypeName(p.ast.nodes[id].type) << ") int [" << r.lo << ", " << r.hi
                    << "] float [" << r.flo << ", " << r.fhi << "] nan " << r.nan << " at b=" << b
                    << " h=" << h << " q=" << q << " kv=" << kv << " s=" << s[kv] << " in "
                    << (sizeof(F) == 4 ? "float" : "double");
              if (p.ast.nodes[id].type == Type::kFloat) {
                // Report the value itself.
                Program value = p;
                value.ast.nodes.resize(id + 1);
                value.varies.resize(id + 1);
                value.ast.root = id;
                Evaluator<F> v(value, prob.aux);
                where << ": value " << v.Score(bind, kv, s[kv]);
              }
              FAIL() << where.str();
            }
          }
        }
      }
    }
  }
}

// Brute-force keep matrix against MaskTileBounds for every rectangle of queries and keys.
void ExpectTileBoundsSound(const Program& p, const Problem& prob, const std::string& text,
                           int* decided) {
  const Env& e = prob.env;
  Evaluator<float> eval(p, prob.aux);
  const int64_t q_lo = e.seq_kv - e.seq_q;
  for (int64_t b = 0; b < e.batch; ++b) {
    for (int64_t h = 0; h < e.output_heads; ++h) {
      Bindings bind;
      bind.b = b;
      bind.h = h;
      bind.hq = h % e.query_heads;
      bind.hkv = h % e.kv_heads;
      std::vector<std::vector<bool>> keep(e.seq_q, std::vector<bool>(e.seq_kv));
      for (int64_t i = 0; i < e.seq_q; ++i) {
        bind.q = q_lo + i;
        for (int64_t kv = 0; kv < e.seq_kv; ++kv) keep[i][kv] = eval.Keeps(bind, kv);
      }
      for (int64_t q0 = 0; q0 < e.seq_q; ++q0) {
        for (int64_t q1 = q0 + 1; q1 <= e.seq_q; ++q1) {
          for (int64_t k0 = 0; k0 < e.seq_kv; ++k0) {
            for (int64_t k1 = k0 + 1; k1 <= e.seq_kv; ++k1) {
              bool any = false, all = true;
              for (int64_t i = q0; i < q1; ++i) {
                for (int64_t kv = k0; kv < k1; ++kv) {
                  any = any || keep[i][kv];
                  all = all && keep[i][kv];
                }
              }
              const TileKeeps t = MaskTileBounds(p, prob.aux, bind, q_lo + q0, q_lo + q1, k0, k1);
              if (t != TileKeeps::kSome) ++*decided;
              ASSERT_FALSE(t == TileKeeps::kNone && any)
                  << text << "\n  " << p.normalized << "\n  tile q [" << q_lo + q0 << ", "
                  << q_lo + q1 << ") kv [" << k0 << ", " << k1 << ") b=" << b << " h=" << h
                  << ": kNone but a pair is kept";
              ASSERT_FALSE(t == TileKeeps::kAll && !all)
                  << text << "\n  " << p.normalized << "\n  tile q [" << q_lo + q0 << ", "
                  << q_lo + q1 << ") kv [" << k0 << ", " << k1 << ") b=" << b << " h=" << h
                  << ": kAll but a pair is dropped";
            }
          }
        }
      }
    }
  }
}

TEST(IntervalTest, RandomProgramsStayInTheirIntervals) {
  int compiled = 0;
  for (const Problem& prob : Problems()) {
    Env env = prob.env;
    env.aux = &prob.aux;
    for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
      testing::RandomExpr gen(kind == Kind::kScoreMod ? 11 : 12, kind, &prob.aux);
      for (int trial = 0; trial < 300; ++trial) {
        const std::string text = gen.Next(1 + trial % 5);
        absl::StatusOr<Program> p = Compile(text, kind, env);
        if (!p.ok()) continue;
        ++compiled;
        ExpectNodesInRange<float>(*p, prob, text);
        if (HasFatalFailure()) return;
        ExpectNodesInRange<double>(*p, prob, text);
        if (HasFatalFailure()) return;
      }
    }
  }
  EXPECT_GT(compiled, 600);
}

TEST(IntervalTest, TileBoundsAreSoundOnRandomMasks) {
  int compiled = 0, decided = 0;
  for (const Problem& prob : Problems()) {
    Env env = prob.env;
    env.aux = &prob.aux;
    testing::RandomExpr gen(13, Kind::kMaskMod, &prob.aux);
    for (int trial = 0; trial < 400; ++trial) {
      const std::string text = gen.Next(1 + trial % 5);
      absl::StatusOr<Program> p = Compile(text, Kind::kMaskMod, env);
      if (!p.ok()) continue;
      ++compiled;
      ExpectTileBoundsSound(*p, prob, text, &decided);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GT(compiled, 400);
  EXPECT_GT(decided, 1000) << "the classifier should decide many tiles, not answer kSome always";
}

// The corners that broke soundness, as small regressions with the reason in each name.
absl::StatusOr<Program> Compile16(const std::string& text, Kind kind,
                                  const std::vector<AuxTensor>* aux = nullptr) {
  Env env;
  env.seq_q = env.seq_kv = 16;
  env.aux = aux;
  return Compile(text, kind, env);
}

TEST(IntervalTest, DivisionOfInt64MinimumByOne) {
  // kMin / 1 is kMin, outside [-kMax, kMax].
  absl::StatusOr<Program> p = Compile16(
      "(-9223372036854775807 - 1) / (kv % 2 + 1) == -9223372036854775807 - 1", Kind::kMaskMod);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->ranges[p->ast.root].can_true());
  Evaluator<float> eval(*p, {});
  EXPECT_TRUE(eval.Keeps(Bindings{}, 0));
  EXPECT_NE(MaskTileBounds(*p, {}, Bindings{}, 0, 16, 0, 16), TileKeeps::kNone);
}

TEST(IntervalTest, Float32OverflowIsInfinite) {
  // exp(100) and 3e38 + 3e38 are finite in double but infinite in float; times 0 they are NaN
  // in float, so the mask drops every pair with kv > 0 in float (the evaluator masks use).
  for (const char* text : {"exp(kv * 100.0) * 0.0 == 0.0", "(3e38 + 3e38 * kv) * 0.0 == 0.0",
                           "(3e38 * kv - 3e38 * kv) * 1e-30 < 1e10"}) {
    absl::StatusOr<Program> p = Compile16(text, Kind::kMaskMod);
    ASSERT_TRUE(p.ok()) << p.status();
    Evaluator<float> eval(*p, {});
    EXPECT_FALSE(eval.Keeps(Bindings{}, 3)) << text;
    EXPECT_TRUE(p->ranges[p->ast.root].can_false()) << text;
    EXPECT_NE(MaskTileBounds(*p, {}, Bindings{}, 0, 16, 0, 16), TileKeeps::kAll) << text;
  }
}

TEST(IntervalTest, ZeroTimesInfinityInsideTheIntervals) {
  // (kv - 3) crosses 0 inside its interval; exp(kv * 100.0) reaches inf in float: at kv = 3 the
  // product is 0 * inf = NaN although no corner of the two intervals is.
  absl::StatusOr<Program> p =
      Compile16("(kv - 3) * exp(kv * 100.0) <= exp(1000.0)", Kind::kMaskMod);
  ASSERT_TRUE(p.ok()) << p.status();
  Evaluator<float> eval(*p, {});
  EXPECT_FALSE(eval.Keeps(Bindings{}, 3));
  EXPECT_NE(MaskTileBounds(*p, {}, Bindings{}, 0, 16, 0, 16), TileKeeps::kAll);
}

TEST(IntervalTest, TileBoundsDecideCommonMasks) {
  // Precision the kernels count on: causal, windows and documents decide whole tiles.
  absl::StatusOr<Program> causal = Compile16("kv <= q", Kind::kMaskMod);
  ASSERT_TRUE(causal.ok());
  EXPECT_EQ(MaskTileBounds(*causal, {}, Bindings{}, 8, 16, 0, 8), TileKeeps::kAll);
  EXPECT_EQ(MaskTileBounds(*causal, {}, Bindings{}, 0, 8, 8, 16), TileKeeps::kNone);
  EXPECT_EQ(MaskTileBounds(*causal, {}, Bindings{}, 0, 8, 0, 8), TileKeeps::kSome);
  std::vector<float> ids(16);
  for (int i = 0; i < 16; ++i) ids[i] = static_cast<float>(i / 4);
  const std::vector<AuxTensor> aux = {MakeAux("doc", {16}, ids)};
  absl::StatusOr<Program> doc = Compile16("doc[q] == doc[kv] && kv <= q", Kind::kMaskMod, &aux);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ(MaskTileBounds(*doc, aux, Bindings{}, 4, 8, 0, 4), TileKeeps::kNone);
  EXPECT_EQ(MaskTileBounds(*doc, aux, Bindings{}, 4, 8, 4, 8), TileKeeps::kSome);
  EXPECT_EQ(MaskTileBounds(*doc, aux, Bindings{}, 6, 8, 4, 6), TileKeeps::kAll);
  absl::StatusOr<Program> prefix = Compile16("kv < 4 || kv <= q", Kind::kMaskMod);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(MaskTileBounds(*prefix, {}, Bindings{}, 0, 4, 0, 4), TileKeeps::kAll);
}

}  // namespace
}  // namespace attnbench::expr
