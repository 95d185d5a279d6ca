// The parsed form of a score_mod / mask_mod expression (docs/expressions.md). Nodes live in one
// flat array with every node's operands before it, so evaluating in index order is a valid
// schedule for the interpreter, the interval analysis and the CUDA source emitter alike.
#ifndef ATTNBENCH_KERNELS_EXPR_AST_H_
#define ATTNBENCH_KERNELS_EXPR_AST_H_

#include <cstdint>
#include <string>
#include <vector>

namespace attnbench::expr {

enum class Type { kInt, kFloat, kBool };

// The variables of §4b, in this order everywhere (bindings, CUDA parameters).
enum class Var { kS, kB, kH, kQ, kKv, kHq, kHkv, kSeqQ, kSeqKv };
inline constexpr int kNumVars = 9;

enum class Op {
  kIntLit,
  kFloatLit,
  kVar,
  kAux,  // aux tensor element: operands a (and b for 2-D) are the indexes
  kNeg,
  kNot,
  kAdd,
  kSub,
  kMul,
  kDiv,
  kMod,
  kLt,
  kLe,
  kGt,
  kGe,
  kEq,
  kNe,
  kAnd,
  kOr,
  kSelect,   // a ? b : c
  kCall,     // func(a) or func(a, b)
  kToFloat,  // an int operand promoted where a float is needed (inserted by the type checker)
};

enum class Func { kMin, kMax, kAbs, kExp, kExp2, kLog, kLog2, kSqrt, kTanh, kSigmoid, kFloor, kCeil };

struct Node {
  Op op = Op::kIntLit;
  Type type = Type::kInt;  // set by the type checker
  int column = 0;          // 1-based byte column of the node's token in the text
  int64_t int_value = 0;   // kIntLit
  double float_value = 0;  // kFloatLit
  int index = 0;           // kVar: Var; kAux: aux tensor; kCall: Func
  int a = -1, b = -1, c = -1;
  std::string name;  // identifier as written (kVar, kAux before resolution; kCall)
};

struct Ast {
  std::vector<Node> nodes;
  int root = -1;
};

// The spellings of the language, shared by the parser, messages and the docs test.
const char* VarName(Var v);
const char* FuncName(Func f);
int FuncArity(Func f);
const char* OpSpelling(Op op);  // "+", "<=", "&&", ...; "" for non-operators
const char* TypeName(Type t);   // "int", "float", "bool"

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_AST_H_
