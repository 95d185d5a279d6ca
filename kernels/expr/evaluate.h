// The interpreter that defines what an expression computes, used by the CPU backend (float)
// and the float64 oracle (double): a row of up to kLanes consecutive keys at a time, so the
// per-node dispatch is paid once per row, not per pair. Integer arithmetic is int64 and wraps;
// x / 0 and x % 0 are 0; floor and ceil of NaN are 0 and saturate at the int64 range; min and
// max of floats ignore a NaN operand (fmin, fmax). Aux indexes are clamped to the tensor's
// shape, which the checker has already proven unnecessary.
#ifndef ATTNBENCH_KERNELS_EXPR_EVALUATE_H_
#define ATTNBENCH_KERNELS_EXPR_EVALUATE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/expr/program.h"

namespace attnbench::expr {

inline constexpr int kLanes = 64;

// The row-invariant variables; kv runs over kv0, kv0 + 1, ... across lanes.
struct Bindings {
  int64_t b = 0, h = 0, q = 0, hq = 0, hkv = 0;
};

// F is float (the CPU backend, and every mask_mod, so masks agree on every backend) or double
// (the oracle's score_mod). Thread-compatible: one evaluator per thread, or const use of
// separate scratch.
template <typename F>
class Evaluator {
 public:
  // `program` and `aux` must outlive the evaluator.
  Evaluator(const Program& program, const std::vector<AuxTensor>& aux);

  // score_mod: s[l] = f(s[l], kv = kv0 + l) for l < n (any n; done in chunks of kLanes).
  void Scores(const Bindings& bind, int64_t kv0, int64_t n, F* s);
  // score_mod with its derivative for a backward pass: s[l] = f(s[l], kv0 + l) and
  // slope[l] = df/ds there (forward-mode, by the usual rules of each operation: integer and bool
  // subexpressions are constant in s, ?: and min/max follow the operand they chose, floor and
  // ceil are constant, x / 0 follows the quotient rule like the IEEE result it gives).
  void ScoresAndSlopes(const Bindings& bind, int64_t kv0, int64_t n, F* s, F* slope);
  // mask_mod: keep[l] = f(kv = kv0 + l) for l < n.
  void Mask(const Bindings& bind, int64_t kv0, int64_t n, uint8_t* keep);
  // One pair (the oracle's and MaskEvaluator::Keeps' path).
  F Score(const Bindings& bind, int64_t kv, F s);
  bool Keeps(const Bindings& bind, int64_t kv);

 private:
  void Run(const Bindings& bind, int64_t kv0, int n, const F* s);
  // d/ds of every float node over the lanes Run just computed, into slopes_.
  void Differentiate(int n);

  const Program* program_;
  const std::vector<AuxTensor>* aux_;
  std::vector<int64_t> ints_;  // [node][lane]; bools as 0/1
  std::vector<F> floats_;      // [node][lane]
  std::vector<F> slopes_;      // [node][lane], ScoresAndSlopes only
};

// A per-thread evaluator for one program, for callers shared by many threads (MaskEvaluator):
// each thread builds its own scratch on first use and reuses it while it keeps asking the same
// owner.
template <typename F>
class ThreadEvaluators {
 public:
  ThreadEvaluators(const Program& program, const std::vector<AuxTensor>& aux);
  Evaluator<F>& Get() const;

 private:
  const Program* program_;
  const std::vector<AuxTensor>* aux_;
  uint64_t serial_;  // unique per instance, so a reused address never finds stale scratch
};

extern template class Evaluator<float>;
extern template class Evaluator<double>;
extern template class ThreadEvaluators<float>;
extern template class ThreadEvaluators<double>;

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_EVALUATE_H_
