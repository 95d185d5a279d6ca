#include "kernels/expr/parser.h"

#include <cctype>
#include <cfloat>
#include <cmath>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attnbench::expr {
namespace {

enum class Tok { kEnd, kIdent, kInt, kFloat, kPunct };

struct Token {
  Tok kind = Tok::kEnd;
  int column = 0;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
};

absl::Status Error(int column, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("column ", column, ": ", what));
}

// Operators longest first, so "<=" is not read as "<" then "=".
constexpr const char* kPunctuation[] = {"&&", "||", "<=", ">=", "==", "!=", "+", "-", "*", "/",
                                        "%",  "<",  ">",  "!",  "?",  ":",  "(", ")", "[", "]",
                                        ","};

class Lexer {
 public:
  explicit Lexer(absl::string_view text) : text_(text) {}

  absl::StatusOr<Token> Next() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    Token t;
    t.column = static_cast<int>(pos_) + 1;
    if (pos_ == text_.size()) return t;
    const char c = text_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = pos_;
      while (end < text_.size() &&
             (std::isalnum(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) {
        ++end;
      }
      t.kind = Tok::kIdent;
      t.text = std::string(text_.substr(pos_, end - pos_));
      pos_ = end;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c == '.' && pos_ + 1 < text_.size() &&
         std::isdigit(static_cast<unsigned char>(text_[pos_ + 1])))) {
      return Number(t);
    }
    for (const char* p : kPunctuation) {
      const absl::string_view op(p);
      if (text_.substr(pos_, op.size()) == op) {
        t.kind = Tok::kPunct;
        t.text = std::string(op);
        pos_ += op.size();
        return t;
      }
    }
    const unsigned char u = static_cast<unsigned char>(c);
    return Error(t.column, std::isprint(u) ? absl::StrCat("unexpected character '", std::string(1, c), "'")
                                           : absl::StrFormat("unexpected byte 0x%02x", u));
  }

 private:
  absl::StatusOr<Token> Number(Token t) {
    size_t end = pos_;
    bool is_float = false;
    auto digits = [&] {
      while (end < text_.size() && std::isdigit(static_cast<unsigned char>(text_[end]))) ++end;
    };
    digits();
    if (end < text_.size() && text_[end] == '.') {
      is_float = true;
      ++end;
      digits();
    }
    if (end < text_.size() && (text_[end] == 'e' || text_[end] == 'E')) {
      size_t exp = end + 1;
      if (exp < text_.size() && (text_[exp] == '+' || text_[exp] == '-')) ++exp;
      if (exp == text_.size() || !std::isdigit(static_cast<unsigned char>(text_[exp]))) {
        return Error(t.column, "a number's exponent needs digits");
      }
      end = exp;
      digits();
      is_float = true;
    }
    if (end < text_.size() &&
        (std::isalpha(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) {
      return Error(static_cast<int>(end) + 1, "a number runs into a name (no suffixes: write 2.0, not 2f)");
    }
    t.text = std::string(text_.substr(pos_, end - pos_));
    pos_ = end;
    if (is_float) {
      t.kind = Tok::kFloat;
      // The kernels compute in float32: a literal must be finite there too, that is below the
      // midpoint between FLT_MAX and the next power of two (which rounds to infinity), so
      // 3.4028235e38, the largest float as usually printed, is accepted.
      if (!absl::SimpleAtod(t.text, &t.float_value) || !std::isfinite(t.float_value) ||
          std::fabs(t.float_value) >= 0x1.ffffffp127) {
        return Error(t.column, absl::StrCat("float literal ", t.text,
                                            " is not finite in float32 (largest 3.4028235e38)"));
      }
      return t;
    }
    t.kind = Tok::kInt;
    if (!absl::SimpleAtoi(t.text, &t.int_value)) {
      return Error(t.column, absl::StrCat("integer literal ", t.text,
                                          " does not fit 64 bits (largest 9223372036854775807)"));
    }
    return t;
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

class Parser {
 public:
  explicit Parser(absl::string_view text) : lexer_(text) {}

  absl::StatusOr<Ast> Run() {
    if (absl::Status s = Advance(); !s.ok()) return s;
    absl::StatusOr<int> root = Conditional(0);
    if (!root.ok()) return root.status();
    if (token_.kind != Tok::kEnd) {
      return Error(token_.column, absl::StrCat("unexpected '", token_.text, "' after the expression"));
    }
    ast_.root = *root;
    return std::move(ast_);
  }

 private:
  absl::Status Advance() {
    absl::StatusOr<Token> t = lexer_.Next();
    if (!t.ok()) return t.status();
    token_ = *std::move(t);
    return absl::OkStatus();
  }
  bool Is(absl::string_view punct) const {
    return token_.kind == Tok::kPunct && token_.text == punct;
  }
  absl::Status Expect(absl::string_view punct, absl::string_view context) {
    if (!Is(punct)) {
      return Error(token_.column, absl::StrCat("expected '", punct, "' ", context, ", found ",
                                               token_.kind == Tok::kEnd ? "the end"
                                                                        : "'" + token_.text + "'"));
    }
    return Advance();
  }

  // Appends a node after its operands; enforces the node and depth limits.
  absl::StatusOr<int> Add(Node n) {
    if (static_cast<int>(ast_.nodes.size()) >= kMaxNodes) {
      return Error(n.column, absl::StrCat("the expression has more than ", kMaxNodes, " nodes"));
    }
    int d = 1;
    for (int child : {n.a, n.b, n.c}) {
      if (child >= 0) d = std::max(d, depth_[child] + 1);
    }
    if (d > kMaxDepth) {
      return Error(n.column, absl::StrCat("the expression nests deeper than ", kMaxDepth, " levels"));
    }
    ast_.nodes.push_back(std::move(n));
    depth_.push_back(d);
    return static_cast<int>(ast_.nodes.size()) - 1;
  }

  // Recursion guard: every recursive call adds at least one level to the tree, so this only
  // bites on text the depth limit would refuse anyway, before the stack can grow.
  struct Guard {
    explicit Guard(int* n) : n_(n) { ++*n_; }
    ~Guard() { --*n_; }
    int* n_;
  };

  absl::StatusOr<int> Conditional(int) {
    Guard g(&recursion_);
    if (recursion_ > 4 * kMaxDepth) {
      return Error(token_.column, absl::StrCat("the expression nests deeper than ", kMaxDepth, " levels"));
    }
    absl::StatusOr<int> cond = Binary(0);
    if (!cond.ok() || !Is("?")) return cond;
    Node n;
    n.op = Op::kSelect;
    n.column = token_.column;
    if (absl::Status s = Advance(); !s.ok()) return s;
    absl::StatusOr<int> then = Conditional(0);
    if (!then.ok()) return then;
    if (absl::Status s = Expect(":", "in 'c ? a : b'"); !s.ok()) return s;
    absl::StatusOr<int> otherwise = Conditional(0);
    if (!otherwise.ok()) return otherwise;
    n.a = *cond;
    n.b = *then;
    n.c = *otherwise;
    return Add(std::move(n));
  }

  // Binary operators by C precedence, all left-associative.
  static int Precedence(const Token& t, Op* op) {
    if (t.kind != Tok::kPunct) return -1;
    static const std::pair<const char*, std::pair<Op, int>> kTable[] = {
        {"||", {Op::kOr, 1}}, {"&&", {Op::kAnd, 2}}, {"==", {Op::kEq, 3}}, {"!=", {Op::kNe, 3}},
        {"<", {Op::kLt, 4}},  {"<=", {Op::kLe, 4}},  {">", {Op::kGt, 4}},  {">=", {Op::kGe, 4}},
        {"+", {Op::kAdd, 5}}, {"-", {Op::kSub, 5}},  {"*", {Op::kMul, 6}}, {"/", {Op::kDiv, 6}},
        {"%", {Op::kMod, 6}}};
    for (const auto& [text, entry] : kTable) {
      if (t.text == text) {
        *op = entry.first;
        return entry.second;
      }
    }
    return -1;
  }

  absl::StatusOr<int> Binary(int min_precedence) {
    Guard g(&recursion_);
    if (recursion_ > 4 * kMaxDepth) {
      return Error(token_.column, absl::StrCat("the expression nests deeper than ", kMaxDepth, " levels"));
    }
    absl::StatusOr<int> left = Unary();
    if (!left.ok()) return left;
    Op op = Op::kAdd;
    for (int p = Precedence(token_, &op); p > min_precedence; p = Precedence(token_, &op)) {
      Node n;
      n.op = op;
      n.column = token_.column;
      if (absl::Status s = Advance(); !s.ok()) return s;
      absl::StatusOr<int> right = Binary(p);
      if (!right.ok()) return right;
      n.a = *left;
      n.b = *right;
      left = Add(std::move(n));
      if (!left.ok()) return left;
    }
    return left;
  }

  absl::StatusOr<int> Unary() {
    Guard g(&recursion_);
    if (recursion_ > 4 * kMaxDepth) {
      return Error(token_.column, absl::StrCat("the expression nests deeper than ", kMaxDepth, " levels"));
    }
    if (Is("-") || Is("!") || Is("+")) {
      const bool plus = Is("+");
      Node n;
      n.op = Is("-") ? Op::kNeg : Op::kNot;
      n.column = token_.column;
      if (absl::Status s = Advance(); !s.ok()) return s;
      absl::StatusOr<int> operand = Unary();
      if (!operand.ok() || plus) return operand;
      n.a = *operand;
      return Add(std::move(n));
    }
    return Primary();
  }

  absl::StatusOr<int> Primary() {
    const Token t = token_;
    switch (t.kind) {
      case Tok::kEnd:
        return Error(t.column, "expected an operand, found the end of the expression");
      case Tok::kInt:
      case Tok::kFloat: {
        if (absl::Status s = Advance(); !s.ok()) return s;
        Node n;
        n.op = t.kind == Tok::kInt ? Op::kIntLit : Op::kFloatLit;
        n.column = t.column;
        n.int_value = t.int_value;
        n.float_value = t.float_value;
        return Add(std::move(n));
      }
      case Tok::kPunct: {
        if (!Is("(")) return Error(t.column, absl::StrCat("expected an operand, found '", t.text, "'"));
        if (absl::Status s = Advance(); !s.ok()) return s;
        absl::StatusOr<int> inner = Conditional(0);
        if (!inner.ok()) return inner;
        if (absl::Status s = Expect(")", "to close '('"); !s.ok()) return s;
        return inner;
      }
      case Tok::kIdent:
        break;
    }
    if (absl::Status s = Advance(); !s.ok()) return s;
    Node n;
    n.column = t.column;
    n.name = t.text;
    if (Is("(")) return Call(std::move(n));
    if (Is("[")) return Index(std::move(n));
    n.op = Op::kVar;
    return Add(std::move(n));
  }

  // Up to two comma-separated operands between `open` and `close`.
  absl::StatusOr<std::vector<int>> Operands(absl::string_view close, absl::string_view what) {
    std::vector<int> args;
    if (absl::Status s = Advance(); !s.ok()) return s;
    if (Is(close)) return Error(token_.column, absl::StrCat(what, " needs at least one operand"));
    while (true) {
      absl::StatusOr<int> arg = Conditional(0);
      if (!arg.ok()) return arg.status();
      args.push_back(*arg);
      if (!Is(",")) break;
      if (args.size() == 2) return Error(token_.column, absl::StrCat(what, " takes at most 2 operands"));
      if (absl::Status s = Advance(); !s.ok()) return s;
    }
    if (absl::Status s = Expect(close, absl::StrCat("to close ", what)); !s.ok()) return s;
    return args;
  }

  absl::StatusOr<int> Call(Node n) {
    bool known = false;
    for (int f = 0; f <= static_cast<int>(Func::kCeil); ++f) {
      if (n.name == FuncName(static_cast<Func>(f))) {
        n.index = f;
        known = true;
      }
    }
    if (!known) {
      return Error(n.column, absl::StrCat("unknown function '", n.name,
                                          "' (functions: min, max, abs, exp, exp2, log, log2, "
                                          "sqrt, tanh, sigmoid, floor, ceil)"));
    }
    absl::StatusOr<std::vector<int>> args = Operands(")", absl::StrCat("'", n.name, "('"));
    if (!args.ok()) return args.status();
    const int arity = FuncArity(static_cast<Func>(n.index));
    if (static_cast<int>(args->size()) != arity) {
      return Error(n.column, absl::StrCat("'", n.name, "' takes ", arity, " argument",
                                          arity == 1 ? "" : "s", ", not ", args->size()));
    }
    n.op = Op::kCall;
    n.a = (*args)[0];
    if (args->size() > 1) n.b = (*args)[1];
    return Add(std::move(n));
  }

  absl::StatusOr<int> Index(Node n) {
    absl::StatusOr<std::vector<int>> args = Operands("]", absl::StrCat("'", n.name, "['"));
    if (!args.ok()) return args.status();
    n.op = Op::kAux;
    n.a = (*args)[0];
    if (args->size() > 1) n.b = (*args)[1];
    return Add(std::move(n));
  }

  Lexer lexer_;
  Token token_;
  Ast ast_;
  std::vector<int> depth_;
  int recursion_ = 0;
};

}  // namespace

absl::StatusOr<Ast> Parse(absl::string_view text) {
  if (text.size() > static_cast<size_t>(kMaxTextBytes)) {
    return Error(kMaxTextBytes + 1, absl::StrCat("the expression is ", text.size(),
                                                 " bytes long, over the limit of ", kMaxTextBytes));
  }
  return Parser(text).Run();
}

}  // namespace attnbench::expr
