// The float64 oracle of PHASE_BACKWARD (docs/variants.md §5): dQ, dK, dV straight from the
// formulas, per (b, h), with P the forward's softmax and dO the incoming gradient:
//
//   t_ij = scale <q_rot_i, k_rot_j> + ALiBi          s_ij = softcap(t_ij) (or t_ij)
//   P_ij = softmax_j(s_ij) over kept pairs          dP_ij = <dO_i, v_j>
//   D_i  = sum_j P_ij dP_ij (= <dO_i, O_i>)          dS_ij = P_ij (dP_ij - D_i)
//   dT_ij = dS_ij (1 - tanh^2(t_ij / cap)) with softcap, else dS_ij  (ALiBi: no gradient)
//   dV[kh(h)]_j += P_ij dO_i
//   dQ_rot[qh(h)]_i += scale sum_j dT_ij k_rot_j,    dK_rot[kh(h)]_j += scale sum_i dT_ij q_rot_i
//   dQ_i = R(i')^T dQ_rot_i,  dK_j = R(j)^T dK_rot_j  (RoPE's transpose: rotate by -angle)
//
// summed over every output head h that reads the query head (dQ) or key/value head (dK, dV).
// Hidden pairs contribute nothing; a query row with every key hidden has O = 0 and gives no
// gradient. A NaN score makes its query row's contributions NaN (as the forward oracle's row).
// Inputs are taken as given (already rounded to the dtype); everything else is double.
//
// Cost: a dQ row visits the kept keys of its query row once per head reading its query head. The
// dK and dV rows of a (b, kv head) need every query row of every head reading it (each row's
// softmax normalizer), so they are computed a group at a time: the kept pairs of those heads are
// visited twice, once for the row statistics (log-sum-exp and D) and once for the gradients.
// Memory per group: the rotated queries and dO of one head and the keys, values and gradients of
// the group, O((S_q + S_kv) D) doubles.
#ifndef ATTNBENCH_KERNELS_REFERENCE_BACKWARD64_H_
#define ATTNBENCH_KERNELS_REFERENCE_BACKWARD64_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/expr/evaluate.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

class Backward64 {
 public:
  // The problem must be normalized, valid, core scope and PHASE_BACKWARD; the inputs those
  // GenerateInputs returns for it, dO included (shapes are checked). Both must outlive the oracle.
  static absl::StatusOr<Backward64> Create(const Problem& problem, const AttentionInputs& inputs);

  const ProblemShapes& shapes() const { return shapes_; }

  // dQ[b, i, query_head, :] (D_qk values). Adds the kept pairs it evaluated to *pairs when given.
  // Fastest for rows in order of (b, query head): the keys of the heads it reads are cached.
  std::vector<double> QueryGradRow(int64_t b, int64_t i, int query_head, uint64_t* pairs = nullptr);

  // dK[b, :, kv_head, :] and dV[b, :, kv_head, :]: every key row of one (batch, kv head).
  struct KeyValueGrads {
    std::vector<double> dk;  // [S_kv * D_qk]
    std::vector<double> dv;  // [S_kv * D_v]
    uint64_t pairs = 0;      // kept pairs evaluated, both passes counted
  };
  // Splits the work over `threads` threads; the result does not depend on how many.
  KeyValueGrads KeyValueGradGroup(int64_t b, int kv_head, int threads) const;

  // Output heads reading each query head, and each key/value head, ascending.
  const std::vector<std::vector<int>>& heads_of_query() const { return heads_of_query_; }
  const std::vector<std::vector<int>>& heads_of_kv() const { return heads_of_kv_; }

 private:
  Backward64(const Problem& problem, const AttentionInputs& inputs, ProblemShapes shapes,
             std::shared_ptr<const ProblemExpressions> exprs);

  struct KeyValues {
    std::vector<double> keys;    // [S_kv, D_qk], RoPE applied
    std::vector<double> values;  // [S_kv, D_v]
  };
  KeyValues LoadKeyValues(int64_t b, int kv_head) const;
  const KeyValues& CachedKeyValues(int64_t b, int kv_head);
  // q[b, i, query_head, :] as double, RoPE applied at position i'.
  void QueryRow(int64_t b, int64_t i, int query_head, double* q) const;
  const float* GradOutRow(int64_t b, int64_t i, int h) const;
  // The score s_ij of head h after every modifier (softcap, then the score_mod), and in *chain
  // its derivative with respect to scale * <q, k> (+ ALiBi), which dS is multiplied by.
  double Score(int64_t b, int h, int64_t i, int64_t j, const double* q, const double* k,
               double* chain) const;
  // Calls f(j) for every key j that (b, h, i) keeps, ascending, skipping 64-key tiles the mask
  // hides whole; and f(i) for every query i that keeps (b, h, j).
  template <typename F>
  void ForKeptKeys(int64_t b, int h, int64_t i, F f) const;
  template <typename F>
  void ForKeptQueries(int64_t b, int h, int64_t j, F f) const;

  const Problem* problem_;
  const AttentionInputs* inputs_;
  ProblemShapes shapes_;
  MaskEvaluator mask_;
  std::vector<double> inv_freq_;
  std::vector<double> slopes_;
  double scale_;
  // The score_mod, in double, one evaluator per thread (the gradient passes run in parallel).
  std::shared_ptr<const ProblemExpressions> exprs_;
  std::unique_ptr<expr::ThreadEvaluators<double>> score_mod_;
  std::vector<std::vector<int>> heads_of_query_;
  std::vector<std::vector<int>> heads_of_kv_;
  // Keys and values of the batch QueryGradRow last read, per kv head.
  int64_t cached_batch_ = -1;
  std::map<int, KeyValues> cache_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_BACKWARD64_H_
