// Interval analysis of a typed expression: for every node, the range of values it can take when
// the variables range over given intervals. One analysis serves three purposes: the checker
// proves every aux index in bounds (variables over their whole ranges), the CUDA emitter picks
// 32-bit integers where they cannot overflow, and mask_mod tiles are classified as keeping
// none, all or some of their pairs (variables over one tile) so kernels skip empty tiles and
// counting needs no per-pair work for full ones. Sound: a value the interpreter can produce
// always lies in its node's interval.
#ifndef ATTNBENCH_KERNELS_EXPR_INTERVAL_H_
#define ATTNBENCH_KERNELS_EXPR_INTERVAL_H_

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/expr/ast.h"

namespace attnbench::expr {

struct Interval {
  // kInt: [lo, hi]. kBool: lo = 0 when false is possible, hi = 1 when true is possible.
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();
  // kFloat: [flo, fhi] (may be infinite) and whether NaN is possible.
  double flo = -std::numeric_limits<double>::infinity();
  double fhi = std::numeric_limits<double>::infinity();
  bool nan = true;

  static Interval Int(int64_t lo, int64_t hi) {
    Interval i;
    i.lo = lo;
    i.hi = hi;
    return i;
  }
  static Interval Float(double lo, double hi, bool nan) {
    Interval i;
    i.flo = lo;
    i.fhi = hi;
    i.nan = nan;
    return i;
  }
  static Interval Bool(bool can_false, bool can_true) {
    return Int(can_false ? 0 : 1, can_true ? 1 : 0);
  }
  bool can_true() const { return hi == 1; }
  bool can_false() const { return lo == 0; }
  bool single_int() const { return lo == hi; }
};

using VarRanges = std::array<Interval, kNumVars>;
// The float range of aux tensor `aux` over indexes in the given intervals (already clamped to
// the tensor's shape; `i1` is meaningless for a 1-D tensor).
using AuxRange = std::function<Interval(int aux, Interval i0, Interval i1)>;

std::vector<Interval> Analyze(const Ast& typed, const VarRanges& vars, const AuxRange& aux,
                              const std::vector<std::vector<int64_t>>& aux_shapes);

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_INTERVAL_H_
