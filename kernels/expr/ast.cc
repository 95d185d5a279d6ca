#include "kernels/expr/ast.h"

namespace attnbench::expr {

const char* VarName(Var v) {
  switch (v) {
    case Var::kS:
      return "s";
    case Var::kB:
      return "b";
    case Var::kH:
      return "h";
    case Var::kQ:
      return "q";
    case Var::kKv:
      return "kv";
    case Var::kHq:
      return "hq";
    case Var::kHkv:
      return "hkv";
    case Var::kSeqQ:
      return "S_q";
    case Var::kSeqKv:
      return "S_kv";
  }
  return "?";
}

const char* FuncName(Func f) {
  switch (f) {
    case Func::kMin:
      return "min";
    case Func::kMax:
      return "max";
    case Func::kAbs:
      return "abs";
    case Func::kExp:
      return "exp";
    case Func::kExp2:
      return "exp2";
    case Func::kLog:
      return "log";
    case Func::kLog2:
      return "log2";
    case Func::kSqrt:
      return "sqrt";
    case Func::kTanh:
      return "tanh";
    case Func::kSigmoid:
      return "sigmoid";
    case Func::kFloor:
      return "floor";
    case Func::kCeil:
      return "ceil";
  }
  return "?";
}

int FuncArity(Func f) { return f == Func::kMin || f == Func::kMax ? 2 : 1; }

const char* OpSpelling(Op op) {
  switch (op) {
    case Op::kNeg:
    case Op::kSub:
      return "-";
    case Op::kNot:
      return "!";
    case Op::kAdd:
      return "+";
    case Op::kMul:
      return "*";
    case Op::kDiv:
      return "/";
    case Op::kMod:
      return "%";
    case Op::kLt:
      return "<";
    case Op::kLe:
      return "<=";
    case Op::kGt:
      return ">";
    case Op::kGe:
      return ">=";
    case Op::kEq:
      return "==";
    case Op::kNe:
      return "!=";
    case Op::kAnd:
      return "&&";
    case Op::kOr:
      return "||";
    case Op::kSelect:
      return "?:";
    default:
      return "";
  }
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kInt:
      return "int";
    case Type::kFloat:
      return "float";
    case Type::kBool:
      return "bool";
  }
  return "?";
}

}  // namespace attnbench::expr
