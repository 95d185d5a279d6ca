#include "kernels/expr/tile_bounds.h"

#include <algorithm>

#include "kernels/expr/interval.h"

namespace attnbench::expr {
namespace {

// Exact range of the elements in the index box while it is small; the tensor's whole range
// beyond that (still sound, only less precise).
constexpr int64_t kMaxScannedElements = 4096;

Interval AuxBox(const AuxTensor& t, const Interval& i0, const Interval& i1) {
  const int64_t rows = i0.hi - i0.lo + 1;
  const int64_t cols = t.shape.size() > 1 ? i1.hi - i1.lo + 1 : 1;
  if (rows * cols > kMaxScannedElements) return Interval::Float(t.min, t.max, false);
  float lo = t.max, hi = t.min;
  for (int64_t r = i0.lo; r <= i0.hi; ++r) {
    if (t.shape.size() == 1) {
      lo = std::min(lo, t.values[r]);
      hi = std::max(hi, t.values[r]);
      continue;
    }
    for (int64_t c = i1.lo; c <= i1.hi; ++c) {
      const float v = t.values[r * t.shape[1] + c];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  return Interval::Float(lo, hi, false);
}

}  // namespace

TileKeeps MaskTileBounds(const Program& mask, const std::vector<AuxTensor>& aux,
                         const Bindings& bind, int64_t q0, int64_t q1, int64_t kv0, int64_t kv1) {
  VarRanges vars;
  vars[static_cast<int>(Var::kB)] = Interval::Int(bind.b, bind.b);
  vars[static_cast<int>(Var::kH)] = Interval::Int(bind.h, bind.h);
  vars[static_cast<int>(Var::kQ)] = Interval::Int(q0, q1 - 1);
  vars[static_cast<int>(Var::kKv)] = Interval::Int(kv0, kv1 - 1);
  vars[static_cast<int>(Var::kHq)] = Interval::Int(bind.hq, bind.hq);
  vars[static_cast<int>(Var::kHkv)] = Interval::Int(bind.hkv, bind.hkv);
  vars[static_cast<int>(Var::kSeqQ)] = Interval::Int(mask.seq_q, mask.seq_q);
  vars[static_cast<int>(Var::kSeqKv)] = Interval::Int(mask.seq_kv, mask.seq_kv);
  const AuxRange box = [&aux](int t, Interval i0, Interval i1) { return AuxBox(aux[t], i0, i1); };
  const Interval root = Analyze(mask.ast, vars, box, mask.aux_shapes)[mask.ast.root];
  if (!root.can_true()) return TileKeeps::kNone;
  if (!root.can_false()) return TileKeeps::kAll;
  return TileKeeps::kSome;
}

}  // namespace attnbench::expr
