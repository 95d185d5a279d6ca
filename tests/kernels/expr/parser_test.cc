// The parser (kernels/expr/parser.h) and the normalized text: C precedence and associativity,
// every operator and function, literal forms, each syntax error with its exact 1-based column,
// the size limits refused cheaply, and normalized text / hash equal exactly when meaning is.
#include "kernels/expr/parser.h"

#include <chrono>
#include <string>

#include "gtest/gtest.h"
#include "kernels/expr/program.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::expr {
namespace {

// Normalized text of `text` compiled as `kind` on a 2 x 4 heads x 16 x 16 problem with a 1-D
// aux tensor `doc` of 16 elements; "ERROR: <message>" when it does not compile.
std::string Norm(const std::string& text, Kind kind = Kind::kScoreMod) {
  static const std::vector<AuxTensor> aux = {
      testing::MakeAux("doc", {16}, std::vector<float>(16, 1.0f)),
      testing::MakeAux("table", {4, 16}, std::vector<float>(64, 2.0f))};
  Env env;
  env.batch = 2;
  env.output_heads = env.query_heads = env.kv_heads = 4;
  env.seq_q = env.seq_kv = 16;
  env.aux = &aux;
  absl::StatusOr<Program> p = Compile(text, kind, env);
  if (!p.ok()) return "ERROR: " + std::string(p.status().message());
  return p->normalized;
}

std::string ParseError(const std::string& text) {
  absl::StatusOr<Ast> ast = Parse(text);
  if (ast.ok()) return "parsed";
  EXPECT_EQ(ast.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(ast.status().message());
}

TEST(ParserTest, PrecedenceAndAssociativity) {
  EXPECT_EQ(Norm("1 + 2 * 3"), "float((1+(2*3)))");
  EXPECT_EQ(Norm("(1 + 2) * 3"), "float(((1+2)*3))");
  EXPECT_EQ(Norm("1 - 2 - 3"), "float(((1-2)-3))");  // left-associative
  EXPECT_EQ(Norm("8 / 4 / 2"), "float(((8/4)/2))");
  EXPECT_EQ(Norm("7 % 4 * 2"), "float(((7%4)*2))");  // same level as *, left to right
  EXPECT_EQ(Norm("1 - -2"), "float((1-(-2)))");
  EXPECT_EQ(Norm("-kv * 2"), "float(((-kv)*2))");  // unary binds tighter than *
  EXPECT_EQ(Norm("+kv"), "float(kv)");             // unary plus adds nothing
  // || below && below == below < below + .
  EXPECT_EQ(Norm("q < kv || kv < 2 && q == 3", Kind::kMaskMod), "((q<kv)||((kv<2)&&(q==3)))");
  EXPECT_EQ(Norm("q + 1 < kv == kv <= 2", Kind::kMaskMod), "(((q+1)<kv)==(kv<=2))");
  EXPECT_EQ(Norm("!(q > kv) && !(q >= kv) || q != kv", Kind::kMaskMod),
            "(((!(q>kv))&&(!(q>=kv)))||(q!=kv))");
  // ?: is right-associative and lowest.
  EXPECT_EQ(Norm("q < 1 ? 1 : q < 2 ? 2 : 3"), "float(((q<1)?1:((q<2)?2:3)))");
  EXPECT_EQ(Norm("q < 1 ? q < 2 ? 1 : 2 : 3"), "float(((q<1)?((q<2)?1:2):3))");
  EXPECT_EQ(Norm("kv < 1 || q < 2 ? 1 : 0"), "float((((kv<1)||(q<2))?1:0))");
}

TEST(ParserTest, EveryFunctionAndPromotion) {
  EXPECT_EQ(Norm("min(q, kv)"), "float(min(q,kv))");
  EXPECT_EQ(Norm("max(q, 1.5)"), "max(float(q),1.5f)");
  EXPECT_EQ(Norm("abs(q - kv)"), "float(abs((q-kv)))");
  EXPECT_EQ(Norm("abs(s)"), "abs(s)");
  for (const char* f : {"exp", "exp2", "log", "log2", "sqrt", "tanh", "sigmoid"}) {
    EXPECT_EQ(Norm(std::string(f) + "(kv)"), std::string(f) + "(float(kv))") << f;
  }
  EXPECT_EQ(Norm("floor(s)"), "float(floor(s))");
  EXPECT_EQ(Norm("ceil(s / 2)"), "float(ceil((s/float(2))))");
  EXPECT_EQ(Norm("doc[kv] + table[h, kv]"), "(aux0[kv]+aux1[h,kv])");
  EXPECT_EQ(Norm("s * 2 + q"), "((s*float(2))+float(q))");
  EXPECT_EQ(Norm("kv < 2 ? s : 0"), "((kv<2)?s:float(0))");
  EXPECT_EQ(Norm("S_q + S_kv + b + hq + hkv"), "float(((((S_q+S_kv)+b)+hq)+hkv))");
}

TEST(ParserTest, Literals) {
  EXPECT_EQ(Norm("1e-3"), "0.001f");
  EXPECT_EQ(Norm(".5"), "0.5f");
  EXPECT_EQ(Norm("2."), "2f");
  EXPECT_EQ(Norm("2.5E+2"), "250f");
  EXPECT_EQ(Norm("0"), "float(0)");
  EXPECT_EQ(Norm("007"), "float(7)");
  EXPECT_EQ(Norm("9223372036854775807"), "float(9223372036854775807)");
  EXPECT_EQ(Norm("1e-50"), "1e-50f");  // underflows to 0 in float: allowed
  // The largest float32 written as the message suggests it.
  EXPECT_EQ(Norm("3.4028235e38").rfind("ERROR", 0), std::string::npos) << Norm("3.4028235e38");
  EXPECT_EQ(ParseError("3.5e38"),
            "column 1: float literal 3.5e38 is not finite in float32 (largest 3.4028235e38)");
  EXPECT_EQ(ParseError("1 + 9223372036854775808"),
            "column 5: integer literal 9223372036854775808 does not fit 64 bits (largest "
            "9223372036854775807)");
  EXPECT_EQ(ParseError(std::string(5000, '9')).substr(0, 30), "column 4097: the expression is");
  EXPECT_EQ(ParseError(std::string(4000, '9')).substr(0, 30), "column 1: integer literal 9999");
  EXPECT_EQ(ParseError("1e999"),
            "column 1: float literal 1e999 is not finite in float32 "
            "(largest 3.4028235e38)");
  EXPECT_EQ(ParseError("0." + std::string(3000, '0') + "1"), "parsed");  // tiny, not an error
}

TEST(ParserTest, SyntaxErrorsNameTheColumn) {
  EXPECT_EQ(ParseError(""), "column 1: expected an operand, found the end of the expression");
  EXPECT_EQ(ParseError("   "), "column 4: expected an operand, found the end of the expression");
  EXPECT_EQ(ParseError("q +"), "column 4: expected an operand, found the end of the expression");
  EXPECT_EQ(ParseError("q + * kv"), "column 5: expected an operand, found '*'");
  EXPECT_EQ(ParseError("(q + kv"), "column 8: expected ')' to close '(', found the end");
  EXPECT_EQ(ParseError("q kv"), "column 3: unexpected 'kv' after the expression");
  EXPECT_EQ(ParseError("q + kv)"), "column 7: unexpected ')' after the expression");
  EXPECT_EQ(ParseError("q $ kv"), "column 3: unexpected character '$'");
  EXPECT_EQ(ParseError("q \x01"), "column 3: unexpected byte 0x01");
  EXPECT_EQ(ParseError("q + \xff"), "column 5: unexpected byte 0xff");
  EXPECT_EQ(ParseError("q = kv"), "column 3: unexpected character '='");
  EXPECT_EQ(ParseError("q & kv"), "column 3: unexpected character '&'");
  EXPECT_EQ(ParseError("1e"), "column 1: a number's exponent needs digits");
  EXPECT_EQ(ParseError("kv + 1e+"), "column 6: a number's exponent needs digits");
  EXPECT_EQ(ParseError("2f"),
            "column 2: a number runs into a name (no suffixes: write 2.0, not 2f)");
  EXPECT_EQ(ParseError("q ? 1"), "column 6: expected ':' in 'c ? a : b', found the end");
  EXPECT_EQ(ParseError("q ? 1 , 2"), "column 7: expected ':' in 'c ? a : b', found ','");
  EXPECT_EQ(ParseError("foo(1)"),
            "column 1: unknown function 'foo' (functions: min, max, abs, exp, exp2, log, log2, "
            "sqrt, tanh, sigmoid, floor, ceil)");
  EXPECT_EQ(ParseError("1 + min(1)"), "column 5: 'min' takes 2 arguments, not 1");
  EXPECT_EQ(ParseError("exp(1, 2)"), "column 1: 'exp' takes 1 argument, not 2");
  EXPECT_EQ(ParseError("max(1, 2, 3)"), "column 9: 'max(' takes at most 2 operands");
  EXPECT_EQ(ParseError("exp()"), "column 5: 'exp(' needs at least one operand");
  EXPECT_EQ(ParseError("doc[]"), "column 5: 'doc[' needs at least one operand");
  EXPECT_EQ(ParseError("doc[1, 2, 3]"), "column 9: 'doc[' takes at most 2 operands");
  EXPECT_EQ(ParseError("doc[1"), "column 6: expected ']' to close 'doc[', found the end");
  EXPECT_EQ(ParseError("exp(1]"), "column 6: expected ')' to close 'exp(', found ']'");
  EXPECT_EQ(ParseError("()"), "column 2: expected an operand, found ')'");
  EXPECT_EQ(ParseError("1 .. 2"), "column 3: unexpected character '.'");
  // A column counts bytes, so it stays exact after a tab or a multi-byte character.
  EXPECT_EQ(ParseError("\tq +"), "column 5: expected an operand, found the end of the expression");
}

TEST(ParserTest, LimitsAreEnforcedCheaply) {
  const auto start = std::chrono::steady_clock::now();
  // 4096 bytes pass the text limit; one more does not.
  std::string ok_text = "1" + std::string(4095, ' ');
  EXPECT_EQ(ParseError(ok_text), "parsed");
  EXPECT_EQ(ParseError(ok_text + " "),
            "column 4097: the expression is 4097 bytes long, over the limit of 4096");
  EXPECT_EQ(ParseError(std::string(10'000'000, '(')).substr(0, 13), "column 4097: ");

  // Nodes: 1 + 1 + ... with n literals has 2n - 1 nodes, but nests n deep on the left; a
  // balanced sum keeps the depth low so only the node limit bites.
  std::function<std::string(int)> balanced = [&](int leaves) -> std::string {
    if (leaves == 1) return "1";
    return "(" + balanced(leaves / 2) + "+" + balanced(leaves - leaves / 2) + ")";
  };
  EXPECT_EQ(ParseError(balanced(128)), "parsed");  // 255 nodes
  const std::string over = balanced(129);          // 257 nodes
  EXPECT_NE(ParseError(over).find("the expression has more than 256 nodes"), std::string::npos)
      << ParseError(over);

  // Depth: -(-(...(1))) with n minus signs has depth n + 1.
  EXPECT_EQ(ParseError(std::string(31, '-') + "1"), "parsed");
  EXPECT_EQ(ParseError(std::string(32, '-') + "1"),
            "column 1: the expression nests deeper than 32 levels");
  std::string chain = "kv";
  for (int i = 0; i < 31; ++i) chain = "abs(" + chain + ")";
  EXPECT_EQ(ParseError(chain), "parsed");
  EXPECT_NE(ParseError("abs(" + chain + ")").find("nests deeper than 32"), std::string::npos);
  // Deep text that builds few nodes is still refused before it can exhaust the stack.
  for (const std::string& deep :
       {std::string(4000, '('), std::string(4000, '+') + "1", std::string(4000, '!'),
        std::string(2000, '(') + "1" + std::string(2000, ')'), [] {
          std::string s;
          for (int i = 0; i < 1000; ++i) s += "1?";
          return s + "1";
        }()}) {
    const std::string message = ParseError(deep);
    EXPECT_NE(message.find("nests deeper than 32"), std::string::npos) << message;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(ParserTest, NormalizedTextAndHashFollowMeaning) {
  Env env;
  env.seq_q = env.seq_kv = 8;
  const auto compile = [&env](const std::string& text) {
    absl::StatusOr<Program> p = Compile(text, Kind::kScoreMod, env);
    EXPECT_TRUE(p.ok()) << text << ": " << p.status();
    return p.ok() ? *p : Program();
  };
  const Program base = compile("s * 0.5 + (q - kv)");
  for (const char* same : {"s*0.5+(q-kv)", "  s *   .5 + ( q - kv )  ", "((s * 5e-1)) + ((q) - kv)",
                           "(s * 0.50) + +(q - kv)", "\ts*\n0.5+(q-kv)"}) {
    const Program p = compile(same);
    EXPECT_EQ(p.normalized, base.normalized) << same;
    EXPECT_EQ(p.hash, base.hash) << same;
  }
  for (const char* different :
       {"s * 0.5 + (kv - q)", "s * 0.5 + q - kv - 1", "s * 0.25 + (q - kv)", "s * 0.5 - (q - kv)",
        "(s + 0.5) * (q - kv)", "s * 0.5 + (q - kv) / 1", "s * 0.5 + (q - hq)"}) {
    const Program p = compile(different);
    EXPECT_NE(p.normalized, base.normalized) << different;
    EXPECT_NE(p.hash, base.hash) << different;
  }
  // Integer 2 and float 2.0 differ in meaning (integer division), and so in text.
  EXPECT_NE(compile("kv / 2").normalized, compile("kv / 2.0").normalized);
}

}  // namespace
}  // namespace attnbench::expr
