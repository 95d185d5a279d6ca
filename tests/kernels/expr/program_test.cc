// The type and bounds checker (kernels/expr/program.h): unknown names, arity, type rules, the
// kinds' result types, aux tensor rank and the proof that every aux index stays in bounds for
// the problem's ranges of b, h, q and kv, each error with the column of the offending token.
#include "kernels/expr/program.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::expr {
namespace {

using testing::MakeAux;

// B = 2, 3 output heads over 3 query heads and 1 KV head, S_q = 4, S_kv = 10 (so q runs over
// [6, 9]); `doc` has exactly S_kv elements, `short_doc` one fewer, `table` is 3 x 10.
class ProgramTest : public ::testing::Test {
 protected:
  ProgramTest() {
    aux_ = {MakeAux("doc", {10}, std::vector<float>(10, 0.0f)),
            MakeAux("short_doc", {9}, std::vector<float>(9, 0.0f)),
            MakeAux("table", {3, 10}, std::vector<float>(30, 0.0f))};
    env_.batch = 2;
    env_.output_heads = env_.query_heads = 3;
    env_.kv_heads = 1;
    env_.seq_q = 4;
    env_.seq_kv = 10;
    env_.aux = &aux_;
  }

  // "ok" or the error message; every error must be INVALID_ARGUMENT.
  std::string Check(const std::string& text, Kind kind = Kind::kScoreMod) {
    absl::StatusOr<Program> p = Compile(text, kind, env_);
    if (p.ok()) return "ok";
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
    return std::string(p.status().message());
  }
  std::string Mask(const std::string& text) { return Check(text, Kind::kMaskMod); }

  std::vector<AuxTensor> aux_;
  Env env_;
};

TEST_F(ProgramTest, UnknownNames) {
  EXPECT_EQ(Check("s + qq"),
            "column 5: unknown name 'qq' (variables: s, b, h, q, kv, hq, hkv, S_q, S_kv; aux "
            "tensors: doc, short_doc, table)");
  EXPECT_EQ(Mask("Q < kv"),
            "column 1: unknown name 'Q' (variables: b, h, q, kv, hq, hkv, S_q, S_kv; aux tensors: "
            "doc, short_doc, table)");
  EXPECT_EQ(Check("s + doc"), "column 5: aux tensor 'doc' needs indexes: doc[i] or doc[i, j]");
  EXPECT_EQ(Check("s + q[0]").substr(0, 36), "column 5: 'q' is not an aux tensor (");
  EXPECT_EQ(Check("s + nope[0]").substr(0, 39), "column 5: 'nope' is not an aux tensor (");
  env_.aux = nullptr;
  EXPECT_EQ(Check("s + doc[0]"),
            "column 5: 'doc' is not an aux tensor (variables: s, b, h, q, kv, hq, hkv, S_q, S_kv)");
}

TEST_F(ProgramTest, ScoreIsNotAMaskVariable) {
  EXPECT_EQ(Mask("s > 0.0"),
            "column 1: 's' (the score) is not available in a mask_mod: a mask decides which pairs "
            "exist before any score is computed");
  EXPECT_EQ(Check("s > 0.0 ? s : 0.0"), "ok");
}

TEST_F(ProgramTest, TypeErrors) {
  EXPECT_EQ(Check("s && 1"),
            "column 3: '&&' needs bool operands, not float and int (compare numbers explicitly, "
            "e.g. x != 0)");
  EXPECT_EQ(Mask("q < kv || kv"),
            "column 8: '||' needs bool operands, not bool and int (compare numbers explicitly, "
            "e.g. x != 0)");
  EXPECT_EQ(Mask("!3"), "column 1: '!' needs a bool operand, not int");
  EXPECT_EQ(Check("-(q < kv) ? 1 : 0"), "column 1: '-' needs a number, not bool");
  EXPECT_EQ(Check("(q < kv) + 1"), "column 10: '+' needs numbers, not bool and int");
  EXPECT_EQ(Check("s % 2"), "column 3: '%' needs int operands, not float and int");
  EXPECT_EQ(Check("kv % 2.0"), "column 4: '%' needs int operands, not int and float");
  EXPECT_EQ(Mask("(q < kv) < 1"), "column 10: '<' cannot compare bool with int");
  EXPECT_EQ(Mask("(q < kv) < (q > kv)"), "column 10: '<' cannot compare bool with bool");
  EXPECT_EQ(Mask("(q < kv) == (q > kv)"), "ok");  // bools compare for (in)equality
  EXPECT_EQ(Check("q ? 1 : 2"), "column 3: the condition of '?:' must be bool, not int");
  EXPECT_EQ(Check("q < kv ? 1 : q < 2"),
            "column 8: the branches of '?:' are int and bool; both must be bool or both numbers");
  EXPECT_EQ(Check("exp(q < kv)"), "column 7: 'exp' needs numbers, not bool");
  EXPECT_EQ(Check("min(1, q < kv)"), "column 10: 'min' needs numbers, not bool");
  EXPECT_EQ(Mask("kv"), "column 1: a mask_mod must be bool (true keeps the pair), not int");
  EXPECT_EQ(Mask("s2 + 1").substr(0, 26), "column 1: unknown name 's2");
  EXPECT_EQ(Mask("1.5 * kv"), "column 5: a mask_mod must be bool (true keeps the pair), not float");
  EXPECT_EQ(Check("q <= kv"), "column 3: a score_mod must be a number (the new score), not bool");
  EXPECT_EQ(Check("kv"), "ok");  // an int score is promoted
}

TEST_F(ProgramTest, ResultTypes) {
  const auto root_type = [&](const std::string& text, Kind kind = Kind::kScoreMod) {
    absl::StatusOr<Program> p = Compile(text, kind, env_);
    EXPECT_TRUE(p.ok()) << p.status();
    const Node& root = p->ast.nodes[p->ast.root];
    // A score_mod of int type is wrapped in a promotion: look through it.
    return root.op == Op::kToFloat ? p->ast.nodes[root.a].type : root.type;
  };
  EXPECT_EQ(root_type("kv / 2"), Type::kInt);
  EXPECT_EQ(root_type("kv / 2.0"), Type::kFloat);
  EXPECT_EQ(root_type("min(kv, 2)"), Type::kInt);
  EXPECT_EQ(root_type("max(kv, 2.0)"), Type::kFloat);
  EXPECT_EQ(root_type("abs(kv)"), Type::kInt);
  EXPECT_EQ(root_type("abs(s)"), Type::kFloat);
  EXPECT_EQ(root_type("floor(s)"), Type::kInt);
  EXPECT_EQ(root_type("ceil(kv)"), Type::kInt);
  EXPECT_EQ(root_type("sqrt(kv)"), Type::kFloat);
  EXPECT_EQ(root_type("kv < 3 ? 1 : 2"), Type::kInt);
  EXPECT_EQ(root_type("kv < 3 ? 1 : 2.5"), Type::kFloat);
  EXPECT_EQ(root_type("kv < 3 ? kv < 4 : q < 2", Kind::kMaskMod), Type::kBool);
}

TEST_F(ProgramTest, AuxRankAndIndexType) {
  EXPECT_EQ(Check("doc[kv, 0]"),
            "column 1: aux tensor 'doc' has 1 dimension but is indexed with 2");
  EXPECT_EQ(Check("s + table[kv]"),
            "column 5: aux tensor 'table' has 2 dimensions but is indexed with 1");
  EXPECT_EQ(Check("doc[0.5]"),
            "column 5: index 0 of 'doc' is float; indexes are integers (use floor or ceil on a "
            "float)");
  EXPECT_EQ(Check("table[h, s]"),
            "column 10: index 1 of 'table' is float; indexes are integers (use floor or ceil on a "
            "float)");
  EXPECT_EQ(Check("doc[q < kv]"),
            "column 7: index 0 of 'doc' is bool; indexes are integers (use floor or ceil on a "
            "float)");
  // An index read from a tensor is bounded by the tensor's values.
  EXPECT_EQ(Check("doc[floor(doc[kv])]"), "ok");  // every value is 0
  aux_[0] = MakeAux("doc", {10}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 10});
  EXPECT_EQ(Check("doc[floor(doc[kv])]"),
            "column 5: index 0 of 'doc' can be anywhere in [0, 10] for this problem, outside [0, "
            "9]; bound it with min and max");
  EXPECT_EQ(Check("doc[min(max(floor(s), 0), 9)]"), "ok");
}

TEST_F(ProgramTest, AuxIndexesAreProvenInBounds) {
  // doc has exactly S_kv elements: kv fits, kv - 1 does not (kv can be 0), kv + 1 does not.
  EXPECT_EQ(Mask("doc[kv] == doc[q]"), "ok");
  EXPECT_EQ(Check("doc[kv - 1]"),
            "column 8: index 0 of 'doc' can be anywhere in [-1, 8] for this problem, outside [0, "
            "9]; bound it with min and max");
  EXPECT_EQ(Check("doc[kv + 1]"),
            "column 8: index 0 of 'doc' can be anywhere in [1, 10] for this problem, outside [0, "
            "9]; bound it with min and max");
  EXPECT_EQ(Check("doc[max(kv - 1, 0)]"), "ok");
  EXPECT_EQ(Check("short_doc[kv]"),
            "column 11: index 0 of 'short_doc' can be anywhere in [0, 9] for this problem, outside "
            "[0, 8]; bound it with min and max");
  EXPECT_EQ(Check("short_doc[q - 1]"), "ok");  // q is in [6, 9]
  EXPECT_EQ(Check("short_doc[q]").substr(0, 50),
            "column 11: index 0 of 'short_doc' can be anywhere ");
  EXPECT_EQ(Check("short_doc[min(kv, 8)]"), "ok");
  EXPECT_EQ(Check("short_doc[kv % 9]"), "ok");
  EXPECT_EQ(Check("short_doc[S_kv - 2]"), "ok");
  EXPECT_EQ(Check("short_doc[S_kv - 1]").substr(0, 50),
            "column 16: index 0 of 'short_doc' can be anywhere ");
  // Table rows are heads (3) and batches (2), columns keys.
  EXPECT_EQ(Check("table[h, kv]"), "ok");
  EXPECT_EQ(Check("table[hq, kv]"), "ok");
  EXPECT_EQ(Check("table[b + 1, kv]"), "ok");
  EXPECT_EQ(Check("table[b + 2, kv]").substr(0, 40), "column 9: index 0 of 'table' can be anyw");
  EXPECT_EQ(Check("table[h, q + 1]").substr(0, 40), "column 12: index 1 of 'table' can be any");
  EXPECT_EQ(Check("table[hkv + 2, q - 6]"), "ok");  // 1 KV head: hkv is 0
  // An index guarded only by a condition is not proven: the checker looks at ranges, not paths.
  EXPECT_EQ(Check("kv > 0 ? doc[kv - 1] : 0.0").substr(0, 30), "column 17: index 0 of 'doc' ca");
  // Batch and head ranges come from the env.
  env_.batch = 4;
  EXPECT_EQ(Check("table[b, kv]").substr(0, 40), "column 7: index 0 of 'table' can be anyw");
}

TEST_F(ProgramTest, UsesAndVaries) {
  absl::StatusOr<Program> p = Compile("doc[kv] == doc[q] && b < 1", Kind::kMaskMod, env_);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->UsesBatch());
  EXPECT_FALSE(p->UsesHead());
  EXPECT_TRUE(p->varies[p->ast.root]);
  p = Compile("hkv < 1", Kind::kMaskMod, env_);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->UsesBatch());
  EXPECT_TRUE(p->UsesHead());
  EXPECT_FALSE(p->varies[p->ast.root]);
  p = Compile("s + 1", Kind::kScoreMod, env_);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->varies[p->ast.root]);  // s differs across a row
}

TEST_F(ProgramTest, Int32Fit) {
  const auto fits = [&](const std::string& text) {
    absl::StatusOr<Program> p = Compile(text, Kind::kScoreMod, env_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() && p->ints_fit_32;
  };
  EXPECT_TRUE(fits("q - kv"));
  EXPECT_FALSE(fits("kv * 2147483647 / 2147483647"));  // 9 * (2^31 - 1) overflows int32
  EXPECT_FALSE(fits("kv * 2147483647"));
  EXPECT_FALSE(fits("2147483648 + 0 * kv"));
  EXPECT_FALSE(fits("floor(s)"));
  EXPECT_FALSE(fits("min(max(floor(s), 0), 5)"));  // floor(s) itself is 64-bit wide
  EXPECT_TRUE(fits("(kv - q) * 100000 + hq"));
}

}  // namespace
}  // namespace attnbench::expr
