#include "kernels/expr/program.h"

#include <cstdio>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/expr/parser.h"

namespace attnbench::expr {
namespace {

absl::Status Error(int column, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("column ", column, ": ", what));
}

bool IsNumber(Type t) { return t == Type::kInt || t == Type::kFloat; }

// Rebuilds the parsed tree typed and in evaluation order, inserting kToFloat where C promotes.
class Checker {
 public:
  Checker(const Ast& parsed, Kind kind, const Env& env) : in_(parsed), kind_(kind), env_(env) {}

  absl::StatusOr<int> Visit(int id) {
    const Node& n = in_.nodes[id];
    Node out = n;
    out.a = out.b = out.c = -1;
    switch (n.op) {
      case Op::kIntLit:
        out.type = Type::kInt;
        return Emit(std::move(out));
      case Op::kFloatLit:
        out.type = Type::kFloat;
        return Emit(std::move(out));
      case Op::kVar:
        return Variable(std::move(out));
      case Op::kAux:
        return Aux(n, std::move(out));
      case Op::kNeg:
      case Op::kNot: {
        absl::StatusOr<int> a = Visit(n.a);
        if (!a.ok()) return a;
        const Type t = type(*a);
        if (n.op == Op::kNot && t != Type::kBool) {
          return Error(n.column, absl::StrCat("'!' needs a bool operand, not ", TypeName(t)));
        }
        if (n.op == Op::kNeg && !IsNumber(t)) {
          return Error(n.column, absl::StrCat("'-' needs a number, not ", TypeName(t)));
        }
        out.a = *a;
        out.type = t;
        return Emit(std::move(out));
      }
      case Op::kAdd:
      case Op::kSub:
      case Op::kMul:
      case Op::kDiv:
      case Op::kMod:
        return Arithmetic(n, std::move(out));
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
      case Op::kEq:
      case Op::kNe:
        return Comparison(n, std::move(out));
      case Op::kAnd:
      case Op::kOr: {
        absl::StatusOr<int> a = Visit(n.a);
        if (!a.ok()) return a;
        absl::StatusOr<int> b = Visit(n.b);
        if (!b.ok()) return b;
        if (type(*a) != Type::kBool || type(*b) != Type::kBool) {
          return Error(n.column, absl::StrCat("'", OpSpelling(n.op), "' needs bool operands, not ",
                                              TypeName(type(*a)), " and ", TypeName(type(*b)),
                                              " (compare numbers explicitly, e.g. x != 0)"));
        }
        out.a = *a;
        out.b = *b;
        out.type = Type::kBool;
        return Emit(std::move(out));
      }
      case Op::kSelect:
        return Select(n, std::move(out));
      case Op::kCall:
        return Call(n, std::move(out));
      case Op::kToFloat:
        break;
    }
    return Error(n.column, "internal: unexpected node");
  }

  Ast Take(int root) {
    out_.root = root;
    return std::move(out_);
  }

 private:
  Type type(int id) const { return out_.nodes[id].type; }

  int Emit(Node n) {
    out_.nodes.push_back(std::move(n));
    return static_cast<int>(out_.nodes.size()) - 1;
  }

  int ToFloat(int id) {
    if (type(id) == Type::kFloat) return id;
    Node n;
    n.op = Op::kToFloat;
    n.type = Type::kFloat;
    n.column = out_.nodes[id].column;
    n.a = id;
    return Emit(std::move(n));
  }

  std::string Names() const {
    std::vector<std::string> names;
    for (int v = kind_ == Kind::kScoreMod ? 0 : 1; v < kNumVars; ++v) {
      names.push_back(VarName(static_cast<Var>(v)));
    }
    std::string out = absl::StrCat("variables: ", absl::StrJoin(names, ", "));
    if (env_.aux != nullptr && !env_.aux->empty()) {
      std::vector<std::string> aux;
      for (const AuxTensor& t : *env_.aux) aux.push_back(t.name);
      absl::StrAppend(&out, "; aux tensors: ", absl::StrJoin(aux, ", "));
    }
    return out;
  }

  int AuxIndex(const std::string& name) const {
    if (env_.aux == nullptr) return -1;
    for (size_t i = 0; i < env_.aux->size(); ++i) {
      if ((*env_.aux)[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }

  absl::StatusOr<int> Variable(Node out) {
    for (int v = 0; v < kNumVars; ++v) {
      if (out.name != VarName(static_cast<Var>(v))) continue;
      if (v == static_cast<int>(Var::kS) && kind_ == Kind::kMaskMod) {
        return Error(out.column, "'s' (the score) is not available in a mask_mod: a mask decides "
                                 "which pairs exist before any score is computed");
      }
      out.index = v;
      out.type = v == static_cast<int>(Var::kS) ? Type::kFloat : Type::kInt;
      return Emit(std::move(out));
    }
    if (AuxIndex(out.name) >= 0) {
      return Error(out.column, absl::StrCat("aux tensor '", out.name,
                                            "' needs indexes: ", out.name, "[i] or ", out.name,
                                            "[i, j]"));
    }
    return Error(out.column, absl::StrCat("unknown name '", out.name, "' (", Names(), ")"));
  }

  absl::StatusOr<int> Aux(const Node& n, Node out) {
    const int aux = AuxIndex(n.name);
    if (aux < 0) {
      return Error(n.column, absl::StrCat("'", n.name, "' is not an aux tensor (", Names(), ")"));
    }
    const int rank = static_cast<int>((*env_.aux)[aux].shape.size());
    const int given = n.b >= 0 ? 2 : 1;
    if (given != rank) {
      return Error(n.column, absl::StrCat("aux tensor '", n.name, "' has ", rank, " dimension",
                                          rank == 1 ? "" : "s", " but is indexed with ", given));
    }
    for (int k = 0; k < given; ++k) {
      absl::StatusOr<int> i = Visit(k == 0 ? n.a : n.b);
      if (!i.ok()) return i;
      if (type(*i) != Type::kInt) {
        return Error(out_.nodes[*i].column,
                     absl::StrCat("index ", k, " of '", n.name, "' is ", TypeName(type(*i)),
                                  "; indexes are integers (use floor or ceil on a float)"));
      }
      (k == 0 ? out.a : out.b) = *i;
    }
    out.index = aux;
    out.type = Type::kFloat;
    return Emit(std::move(out));
  }

  absl::StatusOr<int> Arithmetic(const Node& n, Node out) {
    absl::StatusOr<int> a = Visit(n.a);
    if (!a.ok()) return a;
    absl::StatusOr<int> b = Visit(n.b);
    if (!b.ok()) return b;
    if (!IsNumber(type(*a)) || !IsNumber(type(*b))) {
      return Error(n.column, absl::StrCat("'", OpSpelling(n.op), "' needs numbers, not ",
                                          TypeName(type(*a)), " and ", TypeName(type(*b))));
    }
    if (n.op == Op::kMod && (type(*a) != Type::kInt || type(*b) != Type::kInt)) {
      return Error(n.column, absl::StrCat("'%' needs int operands, not ", TypeName(type(*a)),
                                          " and ", TypeName(type(*b))));
    }
    out.type = type(*a) == Type::kInt && type(*b) == Type::kInt ? Type::kInt : Type::kFloat;
    out.a = out.type == Type::kFloat ? ToFloat(*a) : *a;
    out.b = out.type == Type::kFloat ? ToFloat(*b) : *b;
    return Emit(std::move(out));
  }

  absl::StatusOr<int> Comparison(const Node& n, Node out) {
    absl::StatusOr<int> a = Visit(n.a);
    if (!a.ok()) return a;
    absl::StatusOr<int> b = Visit(n.b);
    if (!b.ok()) return b;
    const Type ta = type(*a), tb = type(*b);
    const bool equality = n.op == Op::kEq || n.op == Op::kNe;
    if (ta == Type::kBool && tb == Type::kBool && equality) {
      out.a = *a;
      out.b = *b;
    } else if (IsNumber(ta) && IsNumber(tb)) {
      const bool f = ta == Type::kFloat || tb == Type::kFloat;
      out.a = f ? ToFloat(*a) : *a;
      out.b = f ? ToFloat(*b) : *b;
    } else {
      return Error(n.column, absl::StrCat("'", OpSpelling(n.op), "' cannot compare ", TypeName(ta),
                                          " with ", TypeName(tb)));
    }
    out.type = Type::kBool;
    return Emit(std::move(out));
  }

  absl::StatusOr<int> Select(const Node& n, Node out) {
    absl::StatusOr<int> c = Visit(n.a);
    if (!c.ok()) return c;
    if (type(*c) != Type::kBool) {
      return Error(n.column, absl::StrCat("the condition of '?:' must be bool, not ",
                                          TypeName(type(*c))));
    }
    absl::StatusOr<int> a = Visit(n.b);
    if (!a.ok()) return a;
    absl::StatusOr<int> b = Visit(n.c);
    if (!b.ok()) return b;
    const Type ta = type(*a), tb = type(*b);
    if (ta == Type::kBool && tb == Type::kBool) {
      out.type = Type::kBool;
    } else if (IsNumber(ta) && IsNumber(tb)) {
      out.type = ta == Type::kInt && tb == Type::kInt ? Type::kInt : Type::kFloat;
    } else {
      return Error(n.column, absl::StrCat("the branches of '?:' are ", TypeName(ta), " and ",
                                          TypeName(tb), "; both must be bool or both numbers"));
    }
    out.a = *c;
    out.b = out.type == Type::kFloat ? ToFloat(*a) : *a;
    out.c = out.type == Type::kFloat ? ToFloat(*b) : *b;
    return Emit(std::move(out));
  }

  absl::StatusOr<int> Call(const Node& n, Node out) {
    const Func f = static_cast<Func>(n.index);
    std::vector<int> args;
    for (int child : {n.a, n.b}) {
      if (child < 0) continue;
      absl::StatusOr<int> a = Visit(child);
      if (!a.ok()) return a;
      if (!IsNumber(type(*a))) {
        return Error(out_.nodes[*a].column, absl::StrCat("'", FuncName(f), "' needs numbers, not ",
                                                         TypeName(type(*a))));
      }
      args.push_back(*a);
    }
    switch (f) {
      case Func::kMin:
      case Func::kMax:
        out.type = type(args[0]) == Type::kInt && type(args[1]) == Type::kInt ? Type::kInt
                                                                              : Type::kFloat;
        break;
      case Func::kAbs:
        out.type = type(args[0]);
        break;
      case Func::kFloor:
      case Func::kCeil:
        out.type = Type::kInt;  // so that a float can index an aux tensor
        break;
      default:
        out.type = Type::kFloat;
        break;
    }
    const bool promote = out.type == Type::kFloat;
    out.a = promote ? ToFloat(args[0]) : args[0];
    if (args.size() > 1) out.b = promote ? ToFloat(args[1]) : args[1];
    return Emit(std::move(out));
  }

  const Ast& in_;
  Kind kind_;
  const Env& env_;
  Ast out_;
};

void Print(const Ast& ast, int id, std::string* out) {
  const Node& n = ast.nodes[id];
  switch (n.op) {
    case Op::kIntLit:
      absl::StrAppend(out, n.int_value);
      return;
    case Op::kFloatLit: {
      char buf[40];
      std::snprintf(buf, sizeof(buf), "%.17gf", n.float_value);
      out->append(buf);
      return;
    }
    case Op::kVar:
      out->append(VarName(static_cast<Var>(n.index)));
      return;
    case Op::kAux:
      absl::StrAppend(out, "aux", n.index, "[");
      Print(ast, n.a, out);
      if (n.b >= 0) {
        out->append(",");
        Print(ast, n.b, out);
      }
      out->append("]");
      return;
    case Op::kToFloat:
      out->append("float(");
      Print(ast, n.a, out);
      out->append(")");
      return;
    case Op::kNeg:
    case Op::kNot:
      absl::StrAppend(out, "(", OpSpelling(n.op));
      Print(ast, n.a, out);
      out->append(")");
      return;
    case Op::kSelect:
      out->append("(");
      Print(ast, n.a, out);
      out->append("?");
      Print(ast, n.b, out);
      out->append(":");
      Print(ast, n.c, out);
      out->append(")");
      return;
    case Op::kCall:
      absl::StrAppend(out, FuncName(static_cast<Func>(n.index)), "(");
      Print(ast, n.a, out);
      if (n.b >= 0) {
        out->append(",");
        Print(ast, n.b, out);
      }
      out->append(")");
      return;
    default:
      out->append("(");
      Print(ast, n.a, out);
      out->append(OpSpelling(n.op));
      Print(ast, n.b, out);
      out->append(")");
      return;
  }
}

uint64_t Fnv1a(absl::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

VarRanges RangesOf(const Env& env) {
  VarRanges r;
  r[static_cast<int>(Var::kS)] = Interval();  // any float, NaN included
  r[static_cast<int>(Var::kB)] = Interval::Int(0, env.batch - 1);
  r[static_cast<int>(Var::kH)] = Interval::Int(0, env.output_heads - 1);
  r[static_cast<int>(Var::kQ)] = Interval::Int(env.seq_kv - env.seq_q, env.seq_kv - 1);
  r[static_cast<int>(Var::kKv)] = Interval::Int(0, env.seq_kv - 1);
  r[static_cast<int>(Var::kHq)] = Interval::Int(0, env.query_heads - 1);
  r[static_cast<int>(Var::kHkv)] = Interval::Int(0, env.kv_heads - 1);
  r[static_cast<int>(Var::kSeqQ)] = Interval::Int(env.seq_q, env.seq_q);
  r[static_cast<int>(Var::kSeqKv)] = Interval::Int(env.seq_kv, env.seq_kv);
  return r;
}

absl::StatusOr<Program> Compile(absl::string_view text, Kind kind, const Env& env) {
  absl::StatusOr<Ast> parsed = Parse(text);
  if (!parsed.ok()) return parsed.status();
  Checker checker(*parsed, kind, env);
  absl::StatusOr<int> root = checker.Visit(parsed->root);
  if (!root.ok()) return root.status();
  Program p;
  p.kind = kind;
  p.ast = checker.Take(*root);
  const Node& top = p.ast.nodes[p.ast.root];
  if (kind == Kind::kMaskMod && top.type != Type::kBool) {
    return Error(parsed->nodes[parsed->root].column,
                 absl::StrCat("a mask_mod must be bool (true keeps the pair), not ",
                              TypeName(top.type)));
  }
  if (kind == Kind::kScoreMod) {
    if (top.type == Type::kBool) {
      return Error(parsed->nodes[parsed->root].column,
                   "a score_mod must be a number (the new score), not bool");
    }
    if (top.type == Type::kInt) {
      Node n;
      n.op = Op::kToFloat;
      n.type = Type::kFloat;
      n.column = top.column;
      n.a = p.ast.root;
      p.ast.nodes.push_back(n);
      p.ast.root = static_cast<int>(p.ast.nodes.size()) - 1;
    }
  }
  p.seq_q = env.seq_q;
  p.seq_kv = env.seq_kv;
  if (env.aux != nullptr) {
    for (const AuxTensor& t : *env.aux) p.aux_shapes.push_back(t.shape);
  }
  const size_t count = p.ast.nodes.size();
  p.varies.assign(count, false);
  for (size_t i = 0; i < count; ++i) {
    const Node& n = p.ast.nodes[i];
    if (n.op == Op::kVar) {
      p.uses[n.index] = true;
      p.varies[i] = n.index == static_cast<int>(Var::kKv) || n.index == static_cast<int>(Var::kS);
    }
    for (int child : {n.a, n.b, n.c}) {
      if (child >= 0 && p.varies[child]) p.varies[i] = true;
    }
  }
  const AuxRange whole = [&env](int aux, Interval, Interval) {
    const AuxTensor& t = (*env.aux)[aux];
    return Interval::Float(t.min, t.max, false);
  };
  p.ranges = Analyze(p.ast, RangesOf(env), whole, p.aux_shapes);
  p.ints_fit_32 = true;
  for (size_t i = 0; i < count; ++i) {
    const Node& n = p.ast.nodes[i];
    const Interval& r = p.ranges[i];
    if (n.type == Type::kInt && (r.lo < INT32_MIN || r.hi > INT32_MAX)) p.ints_fit_32 = false;
    if (n.op != Op::kAux) continue;
    for (int k = 0; k < static_cast<int>(p.aux_shapes[n.index].size()); ++k) {
      const Interval& idx = p.ranges[k == 0 ? n.a : n.b];
      const int64_t dim = p.aux_shapes[n.index][k];
      if (idx.lo < 0 || idx.hi >= dim) {
        return Error(p.ast.nodes[k == 0 ? n.a : n.b].column,
                     absl::StrCat("index ", k, " of '", n.name, "' can be anywhere in [", idx.lo,
                                  ", ", idx.hi, "] for this problem, outside [0, ", dim - 1,
                                  "]; bound it with min and max"));
      }
    }
  }
  Print(p.ast, p.ast.root, &p.normalized);
  p.hash = Fnv1a(p.normalized);
  return p;
}

}  // namespace attnbench::expr
