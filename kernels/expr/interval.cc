#include "kernels/expr/interval.h"

#include <algorithm>
#include <cmath>

namespace attnbench::expr {
namespace {

__extension__ typedef __int128 Wide;
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The full range when any corner leaves int64: the interpreter's arithmetic wraps there.
Interval FromWide(Wide lo, Wide hi) {
  if (lo < kMin || hi > kMax) return Interval::Int(kMin, kMax);
  return Interval::Int(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
}

Interval Corners(Wide a0, Wide a1, Wide b0, Wide b1) {
  const Wide c[] = {a0 * b0, a0 * b1, a1 * b0, a1 * b1};
  return FromWide(*std::min_element(c, c + 4), *std::max_element(c, c + 4));
}

int64_t MaxAbs(const Interval& x) {
  if (x.lo == kMin) return kMax;
  return std::max(std::abs(x.lo), std::abs(x.hi));
}

Interval IntDiv(const Interval& a, const Interval& b) {
  // Truncating division never grows |a| (x / 0 = 0; kMin / -1 wraps to kMin, covered by M).
  // kMin / 1 is kMin itself, outside [-kMax, kMax], and kMin / -1 wraps to kMin.
  if (a.lo == kMin) return Interval::Int(kMin, kMax);
  const int64_t m = MaxAbs(a);
  if (a.lo >= 0 && b.lo > 0) return Interval::Int(a.lo / b.hi, a.hi / b.lo);
  return Interval::Int(-m, m);
}

Interval IntMod(const Interval& a, const Interval& b) {
  // |a % b| < |b| and |a % b| <= |a|, with the sign of a (x % 0 = 0).
  const int64_t bound = std::min(MaxAbs(a), std::max<int64_t>(MaxAbs(b) - 1, 0));
  return Interval::Int(a.lo >= 0 ? 0 : -bound, a.hi <= 0 ? 0 : bound);
}

// Float32 rounding of an operation on interval endpoints can move a result past the endpoint
// computed in double; a relative margin keeps the interval sound for the float kernels.
// An endpoint representable in float32 stays exact for correctly rounded operations (+ - * /,
// conversions), so equality tests on exact values (document ids) stay decidable; library
// functions (exp, log, ...) are not correctly rounded and always get the margin.
// An endpoint beyond float32's range is infinite for the float interpreter (3e38 + 3e38,
// exp(100)) yet finite for the double one: the interval then reaches to infinity on that side
// and keeps FLT_MAX on the other, covering both, so that 0 * inf and inf - inf show up as NaN.
Interval Widened(double lo, double hi, bool nan, bool library = false) {
  if (std::isnan(lo) || std::isnan(hi)) return Interval::Float(-kInf, kInf, true);
  const auto margin = [library](double v) {
    if (std::isinf(v) || (!library && static_cast<double>(static_cast<float>(v)) == v)) return 0.0;
    return std::fabs(v) * 1e-6 + 1e-30;
  };
  constexpr double kFloatMax = std::numeric_limits<float>::max();
  lo = lo > kFloatMax ? kFloatMax : lo < -kFloatMax ? -kInf : lo - margin(lo);
  hi = hi < -kFloatMax ? -kFloatMax : hi > kFloatMax ? kInf : hi + margin(hi);
  return Interval::Float(lo, hi, nan);
}

Interval FloatCorners(const Interval& a, const Interval& b, double (*f)(double, double),
                      bool product = false) {
  const double c[] = {f(a.flo, b.flo), f(a.flo, b.fhi), f(a.fhi, b.flo), f(a.fhi, b.fhi)};
  bool nan = a.nan || b.nan;
  // 0 * inf is NaN where 0 lies inside one interval and the other reaches infinity, a case no
  // corner shows ([-1, 1] * [1, inf]).
  const auto has_zero = [](const Interval& x) { return x.flo <= 0 && x.fhi >= 0; };
  const auto has_inf = [](const Interval& x) { return std::isinf(x.flo) || std::isinf(x.fhi); };
  if (product && ((has_zero(a) && has_inf(b)) || (has_zero(b) && has_inf(a)))) nan = true;
  double lo = kInf, hi = -kInf;
  for (double v : c) {
    if (std::isnan(v)) {
      nan = true;  // inf - inf, 0 * inf
      return Interval::Float(-kInf, kInf, true);
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return Widened(lo, hi, nan);
}

// A non-decreasing function on [dom_lo, inf), NaN below it.
Interval Monotone(const Interval& a, double (*f)(double), double dom_lo) {
  const bool nan = a.nan || a.flo < dom_lo;
  const double lo = std::max(a.flo, dom_lo), hi = a.fhi;
  if (hi < dom_lo) return Interval::Float(kInf, -kInf, true);  // only NaN
  return Widened(f(lo), f(hi), nan, /*library=*/true);
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

int64_t Saturate(double v) {
  if (v >= 9.2233720368547758e18) return kMax;
  if (v <= -9.2233720368547758e18) return kMin;
  return static_cast<int64_t>(v);
}

Interval ToInt(const Interval& a, double (*round)(double)) {
  if (a.flo > a.fhi) return Interval::Int(0, 0);  // only NaN, which converts to 0
  int64_t lo = Saturate(round(a.flo)), hi = Saturate(round(a.fhi));
  if (a.nan) {
    lo = std::min<int64_t>(lo, 0);
    hi = std::max<int64_t>(hi, 0);
  }
  return Interval::Int(lo, hi);
}

Interval Hull(const Interval& a, const Interval& b, Type t) {
  if (t == Type::kFloat) {
    return Interval::Float(std::min(a.flo, b.flo), std::max(a.fhi, b.fhi), a.nan || b.nan);
  }
  return Interval::Int(std::min(a.lo, b.lo), std::max(a.hi, b.hi));
}

// Three-valued comparison of two numbers of type t.
Interval Compare(Op op, const Interval& a, const Interval& b, Type t) {
  bool can_true, can_false;
  if (t == Type::kFloat) {
    const bool nan = a.nan || b.nan;
    const bool a_empty = a.flo > a.fhi, b_empty = b.flo > b.fhi;
    if (a_empty || b_empty) {  // an operand is always NaN
      return Interval::Bool(op != Op::kNe, op == Op::kNe);
    }
    switch (op) {
      case Op::kLt:
        can_true = a.flo < b.fhi;
        can_false = nan || a.fhi >= b.flo;
        break;
      case Op::kLe:
        can_true = a.flo <= b.fhi;
        can_false = nan || a.fhi > b.flo;
        break;
      case Op::kGt:
        can_true = a.fhi > b.flo;
        can_false = nan || a.flo <= b.fhi;
        break;
      case Op::kGe:
        can_true = a.fhi >= b.flo;
        can_false = nan || a.flo < b.fhi;
        break;
      case Op::kEq:
        can_true = a.flo <= b.fhi && b.flo <= a.fhi;
        can_false = nan || !(a.flo == a.fhi && b.flo == b.fhi && a.flo == b.flo);
        break;
      default:  // kNe
        can_true = nan || !(a.flo == a.fhi && b.flo == b.fhi && a.flo == b.flo);
        can_false = a.flo <= b.fhi && b.flo <= a.fhi;
        break;
    }
    return Interval::Bool(can_false, can_true);
  }
  switch (op) {
    case Op::kLt:
      can_true = a.lo < b.hi;
      can_false = a.hi >= b.lo;
      break;
    case Op::kLe:
      can_true = a.lo <= b.hi;
      can_false = a.hi > b.lo;
      break;
    case Op::kGt:
      can_true = a.hi > b.lo;
      can_false = a.lo <= b.hi;
      break;
    case Op::kGe:
      can_true = a.hi >= b.lo;
      can_false = a.lo < b.hi;
      break;
    case Op::kEq:
      can_true = a.lo <= b.hi && b.lo <= a.hi;
      can_false = !(a.single_int() && b.single_int() && a.lo == b.lo);
      break;
    default:  // kNe
      can_true = !(a.single_int() && b.single_int() && a.lo == b.lo);
      can_false = a.lo <= b.hi && b.lo <= a.hi;
      break;
  }
  return Interval::Bool(can_false, can_true);
}

Interval Clamp(const Interval& i, int64_t dim) {
  return Interval::Int(std::clamp<int64_t>(i.lo, 0, dim - 1), std::clamp<int64_t>(i.hi, 0, dim - 1));
}

}  // namespace

std::vector<Interval> Analyze(const Ast& ast, const VarRanges& vars, const AuxRange& aux,
                              const std::vector<std::vector<int64_t>>& aux_shapes) {
  std::vector<Interval> r(ast.nodes.size());
  for (size_t i = 0; i < ast.nodes.size(); ++i) {
    const Node& n = ast.nodes[i];
    const Interval* a = n.a >= 0 ? &r[n.a] : nullptr;
    const Interval* b = n.b >= 0 ? &r[n.b] : nullptr;
    const Type ta = n.a >= 0 ? ast.nodes[n.a].type : Type::kInt;
    Interval& out = r[i];
    switch (n.op) {
      case Op::kIntLit:
        out = Interval::Int(n.int_value, n.int_value);
        break;
      case Op::kFloatLit:
        out = Widened(n.float_value, n.float_value, false);
        break;
      case Op::kVar:
        out = vars[n.index];
        break;
      case Op::kAux: {
        const std::vector<int64_t>& shape = aux_shapes[n.index];
        const Interval i0 = Clamp(*a, shape[0]);
        const Interval i1 = shape.size() > 1 ? Clamp(*b, shape[1]) : Interval::Int(0, 0);
        out = aux(n.index, i0, i1);
        break;
      }
      case Op::kToFloat:
        out = Widened(static_cast<double>(a->lo), static_cast<double>(a->hi), false);
        break;
      case Op::kNeg:
        if (n.type == Type::kFloat) {
          out = Interval::Float(-a->fhi, -a->flo, a->nan);
        } else {
          out = FromWide(-static_cast<Wide>(a->hi), -static_cast<Wide>(a->lo));
        }
        break;
      case Op::kNot:
        out = Interval::Bool(a->can_true(), a->can_false());
        break;
      case Op::kAdd:
      case Op::kSub:
      case Op::kMul:
      case Op::kDiv:
      case Op::kMod:
        if (n.type == Type::kFloat) {
          double (*f)(double, double) = nullptr;
          switch (n.op) {
            case Op::kAdd:
              f = [](double x, double y) { return x + y; };
              break;
            case Op::kSub:
              f = [](double x, double y) { return x - y; };
              break;
            case Op::kMul:
              f = [](double x, double y) { return x * y; };
              break;
            default:
              f = [](double x, double y) { return x / y; };
              break;
          }
          if (n.op == Op::kDiv && b->flo <= 0 && b->fhi >= 0) {
            out = Interval::Float(-kInf, kInf, true);  // x / 0 is infinite or NaN
          } else {
            out = FloatCorners(*a, *b, f, n.op == Op::kMul);
          }
        } else if (n.op == Op::kAdd) {
          out = FromWide(static_cast<Wide>(a->lo) + b->lo, static_cast<Wide>(a->hi) + b->hi);
        } else if (n.op == Op::kSub) {
          out = FromWide(static_cast<Wide>(a->lo) - b->hi, static_cast<Wide>(a->hi) - b->lo);
        } else if (n.op == Op::kMul) {
          out = Corners(a->lo, a->hi, b->lo, b->hi);
        } else if (n.op == Op::kDiv) {
          out = IntDiv(*a, *b);
        } else {
          out = IntMod(*a, *b);
        }
        break;
      case Op::kLt:
      case Op::kLe:
      case Op::kGt:
      case Op::kGe:
      case Op::kEq:
      case Op::kNe:
        out = Compare(n.op, *a, *b, ta);
        break;
      case Op::kAnd:
        out = Interval::Bool(a->can_false() || b->can_false(), a->can_true() && b->can_true());
        break;
      case Op::kOr:
        out = Interval::Bool(a->can_false() && b->can_false(), a->can_true() || b->can_true());
        break;
      case Op::kSelect: {
        const Interval& then = r[n.b];
        const Interval& otherwise = r[n.c];
        if (!a->can_false()) {
          out = then;
        } else if (!a->can_true()) {
          out = otherwise;
        } else if (n.type == Type::kBool) {
          out = Interval::Bool(then.can_false() || otherwise.can_false(),
                               then.can_true() || otherwise.can_true());
        } else {
          out = Hull(then, otherwise, n.type);
        }
        break;
      }
      case Op::kCall:
        switch (static_cast<Func>(n.index)) {
          case Func::kMin:
          case Func::kMax: {
            const bool is_min = static_cast<Func>(n.index) == Func::kMin;
            if (n.type == Type::kInt) {
              out = is_min ? Interval::Int(std::min(a->lo, b->lo), std::min(a->hi, b->hi))
                           : Interval::Int(std::max(a->lo, b->lo), std::max(a->hi, b->hi));
            } else if (a->nan || b->nan) {
              // fmin/fmax return the other operand for one NaN: anything in either range.
              out = Interval::Float(std::min(a->flo, b->flo), std::max(a->fhi, b->fhi),
                                    a->nan && b->nan);
            } else {
              out = is_min ? Interval::Float(std::min(a->flo, b->flo), std::min(a->fhi, b->fhi), false)
                           : Interval::Float(std::max(a->flo, b->flo), std::max(a->fhi, b->fhi), false);
            }
            break;
          }
          case Func::kAbs:
            if (n.type == Type::kInt) {
              if (a->lo == kMin) {
                out = Interval::Int(kMin, kMax);  // abs(kMin) wraps
              } else if (a->lo >= 0) {
                out = *a;
              } else if (a->hi <= 0) {
                out = Interval::Int(-a->hi, -a->lo);
              } else {
                out = Interval::Int(0, std::max(-a->lo, a->hi));
              }
            } else {
              const double lo = (a->flo <= 0 && a->fhi >= 0) ? 0.0
                                                              : std::min(std::fabs(a->flo), std::fabs(a->fhi));
              out = Interval::Float(lo, std::max(std::fabs(a->flo), std::fabs(a->fhi)), a->nan);
            }
            break;
          case Func::kExp:
            out = Monotone(*a, [](double x) { return std::exp(x); }, -kInf);
            break;
          case Func::kExp2:
            out = Monotone(*a, [](double x) { return std::exp2(x); }, -kInf);
            break;
          case Func::kLog:
            out = Monotone(*a, [](double x) { return std::log(x); }, 0.0);
            break;
          case Func::kLog2:
            out = Monotone(*a, [](double x) { return std::log2(x); }, 0.0);
            break;
          case Func::kSqrt:
            out = Monotone(*a, [](double x) { return std::sqrt(x); }, 0.0);
            break;
          case Func::kTanh:
            out = Monotone(*a, [](double x) { return std::tanh(x); }, -kInf);
            break;
          case Func::kSigmoid:
            out = Monotone(*a, Sigmoid, -kInf);
            break;
          case Func::kFloor:
            out = ta == Type::kInt ? *a : ToInt(*a, [](double x) { return std::floor(x); });
            break;
          case Func::kCeil:
            out = ta == Type::kInt ? *a : ToInt(*a, [](double x) { return std::ceil(x); });
            break;
        }
        break;
    }
    if (n.type == Type::kFloat && out.flo > out.fhi && !out.nan) out.nan = true;
  }
  return r;
}

}  // namespace attnbench::expr
