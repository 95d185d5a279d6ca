#include "kernels/expr/cuda_source.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace attnbench::expr {
namespace {

std::string FloatLiteral(double v) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.9ef", static_cast<double>(static_cast<float>(v)));
  return buf;
}

std::string IntLiteral(int64_t v, bool narrow) {
  if (v == INT64_MIN) return "(-9223372036854775807LL - 1)";
  return narrow ? absl::StrCat("(int)", v) : absl::StrCat(v, "LL");
}

const char* FloatFunc(Func f) {
  switch (f) {
    case Func::kExp:
      return "expf";
    case Func::kExp2:
      return "exp2f";
    case Func::kLog:
      return "logf";
    case Func::kLog2:
      return "log2f";
    case Func::kSqrt:
      return "sqrtf";
    case Func::kTanh:
      return "tanhf";
    case Func::kSigmoid:
      return "attnbench_sigmoid";
    case Func::kMin:
      return "fminf";
    case Func::kMax:
      return "fmaxf";
    case Func::kAbs:
      return "fabsf";
    default:
      return "";
  }
}

}  // namespace

std::string CudaPrelude() {
  return R"(// attnbench expression helpers: the interpreter's semantics (kernels/expr/evaluate.h).
#ifndef __CUDACC__
#include <math.h>
#define __device__
#define __forceinline__ inline
#endif
struct AttnbenchAux { const float* data; long long rows, cols; };
template <typename T> __device__ __forceinline__ T attnbench_wrap_add(T a, T b) {
  return (T)((unsigned long long)a + (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T attnbench_wrap_sub(T a, T b) {
  return (T)((unsigned long long)a - (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T attnbench_wrap_mul(T a, T b) {
  return (T)((unsigned long long)a * (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T attnbench_div(T a, T b) {
  return b == 0 ? (T)0 : b == -1 ? attnbench_wrap_sub((T)0, a) : (T)(a / b); }
template <typename T> __device__ __forceinline__ T attnbench_mod(T a, T b) {
  return (b == 0 || b == -1) ? (T)0 : (T)(a % b); }
template <typename T> __device__ __forceinline__ T attnbench_abs(T a) {
  return a < 0 ? attnbench_wrap_sub((T)0, a) : a; }
template <typename T> __device__ __forceinline__ T attnbench_min(T a, T b) { return a < b ? a : b; }
template <typename T> __device__ __forceinline__ T attnbench_max(T a, T b) { return a < b ? b : a; }
template <typename T> __device__ __forceinline__ T attnbench_to_int(float v) {
  if (v != v) return (T)0;
  if (v >= 9.2233720368547758e18f) return (T)9223372036854775807LL;
  if (v <= -9.2233720368547758e18f) return (T)(-9223372036854775807LL - 1);
  return (T)(long long)v; }
__device__ __forceinline__ float attnbench_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ long long attnbench_clamp(long long i, long long n) {
  return i < 0 ? 0 : (i >= n ? n - 1 : i); }
)";
}

std::string CudaFunction(const Program& p, absl::string_view name) {
  const bool narrow = p.ints_fit_32;
  const std::string T = narrow ? "int" : "long long";
  std::string out;
  if (p.kind == Kind::kScoreMod) {
    absl::StrAppend(&out, "__device__ __forceinline__ float ", name, "(float s, ");
  } else {
    absl::StrAppend(&out, "__device__ __forceinline__ bool ", name, "(");
  }
  absl::StrAppend(&out, T, " b, ", T, " h, ", T, " q, ", T, " kv, ", T, " hq, ", T,
                  " hkv, const AttnbenchAux* aux) {\n");
  absl::StrAppend(&out, "  (void)b; (void)h; (void)q; (void)kv; (void)hq; (void)hkv; (void)aux;\n");
  if (p.kind == Kind::kScoreMod) out += "  (void)s;\n";
  const auto v = [](int id) { return absl::StrCat("v", id); };
  for (size_t id = 0; id < p.ast.nodes.size(); ++id) {
    const Node& n = p.ast.nodes[id];
    const std::string type = n.type == Type::kFloat ? "float" : n.type == Type::kBool ? "bool" : T;
    std::string e;
    const std::string a = n.a >= 0 ? v(n.a) : "";
    const std::string b = n.b >= 0 ? v(n.b) : "";
    const bool f = n.type == Type::kFloat;
    switch (n.op) {
      case Op::kIntLit:
        e = IntLiteral(n.int_value, narrow);
        break;
      case Op::kFloatLit:
        e = FloatLiteral(n.float_value);
        break;
      case Op::kVar:
        switch (static_cast<Var>(n.index)) {
          case Var::kSeqQ:
            e = IntLiteral(p.seq_q, narrow);
            break;
          case Var::kSeqKv:
            e = IntLiteral(p.seq_kv, narrow);
            break;
          default:
            e = VarName(static_cast<Var>(n.index));
            break;
        }
        break;
      case Op::kAux: {
        const std::string t = absl::StrCat("aux[", n.index, "]");
        e = absl::StrCat(t, ".data[attnbench_clamp((long long)", a, ", ", t, ".rows) * ", t,
                         ".cols");
        if (n.b >= 0) absl::StrAppend(&e, " + attnbench_clamp((long long)", b, ", ", t, ".cols)");
        e += "]";
        break;
      }
      case Op::kToFloat:
        e = absl::StrCat("(float)", a);
        break;
      case Op::kNeg:
        e = f ? absl::StrCat("-", a) : absl::StrCat("attnbench_wrap_sub((", T, ")0, ", a, ")");
        break;
      case Op::kNot:
        e = absl::StrCat("!", a);
        break;
      case Op::kAdd:
        e = f ? absl::StrCat(a, " + ", b) : absl::StrCat("attnbench_wrap_add(", a, ", ", b, ")");
        break;
      case Op::kSub:
        e = f ? absl::StrCat(a, " - ", b) : absl::StrCat("attnbench_wrap_sub(", a, ", ", b, ")");
        break;
      case Op::kMul:
        e = f ? absl::StrCat(a, " * ", b) : absl::StrCat("attnbench_wrap_mul(", a, ", ", b, ")");
        break;
      case Op::kDiv:
        e = f ? absl::StrCat(a, " / ", b) : absl::StrCat("attnbench_div(", a, ", ", b, ")");
        break;
      case Op::kMod:
        e = absl::StrCat("attnbench_mod(", a, ", ", b, ")");
        break;
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
      case Op::kEq:
      case Op::kNe:
      case Op::kAnd:
      case Op::kOr:
        e = absl::StrCat(a, " ", OpSpelling(n.op), " ", b);
        break;
      case Op::kSelect:
        e = absl::StrCat(a, " ? ", b, " : ", v(n.c));
        break;
      case Op::kCall: {
        const Func fn = static_cast<Func>(n.index);
        const Type operand = p.ast.nodes[n.a].type;
        if (fn == Func::kFloor || fn == Func::kCeil) {
          e = operand == Type::kInt
                  ? a
                  : absl::StrCat("attnbench_to_int<", T, ">(", fn == Func::kFloor ? "floorf" : "ceilf",
                                 "(", a, "))");
        } else if (!f) {  // int min, max, abs
          e = absl::StrCat(fn == Func::kMin ? "attnbench_min(" : fn == Func::kMax ? "attnbench_max("
                                                                                  : "attnbench_abs(",
                           a, n.b >= 0 ? absl::StrCat(", ", b) : "", ")");
        } else {
          e = absl::StrCat(FloatFunc(fn), "(", a, n.b >= 0 ? absl::StrCat(", ", b) : "", ")");
        }
        break;
      }
    }
    absl::StrAppend(&out, "  const ", type, " ", v(static_cast<int>(id)), " = ", e, ";\n");
  }
  absl::StrAppend(&out, "  return ", v(p.ast.root), ";\n}\n");
  return out;
}

}  // namespace attnbench::expr
