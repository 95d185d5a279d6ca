// The CPU backward kernel (PHASE_BACKWARD, docs/variants.md §5): dQ, dK, dV in float32 from Q, K,
// V, dO and what the forward saved (O before rounding, the log-sum-exp of each row), in the manner
// of FlashAttention-2's backward: P is recomputed tile by tile as exp(S - lse), never stored
// whole, so memory stays O(S * D). Three passes over the thread pool, none needing atomics, each
// writing disjoint outputs in a fixed order, so the result does not depend on the thread count:
//
//   rows:   D_i = <dO_i, O_i> per (b, h, i)
//   keys:   per (b, kv head, key block), for every head h reading the kv head and every query
//           block the mask does not hide: S = Q K^T (+ ALiBi, softcap), P = exp(S - lse),
//           dV += P^T dO, dP = dO V^T, dS = P (dP - D) (times softcap's 1 - tanh^2), dK += dS^T Q
//   queries: per (b, query head, query block), for every head reading the query head and every
//           key block the mask does not hide: S, P, dP, dS again, dQ += dS K
//
// FlashAttention-2 accumulates dQ from the key pass with atomic adds; recomputing S and dP in a
// query pass instead costs two more matmuls per kept pair (seven where the counting of §7 has
// five) and keeps the sums deterministic. K and V are read per kv head, never expanded to the
// output heads; dK and dV sum over every head that reads them, dQ over every head that reads its
// query head. Queries arrive prepared (RoPE at i', times scale) and keys rotated, so
// dK_rot = dS^T Q_prepared carries the scale already; dQ and dK leave through RoPE's transpose.
// dQ, dK, dV are rounded to the dtype once, at the end.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_H_
#define ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "kernels/expr/evaluate.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/stop_check.h"

namespace attnbench {

// What the backward reads, all float32 BSHD buffers of the problem's shapes.
struct BackwardOperands {
  const float* queries = nullptr;   // [B, S_q, H_q, D_qk], prepared: RoPE at i', times scale
  const float* keys = nullptr;      // [B, S_kv, H_kv, D_qk], RoPE at j
  const float* values = nullptr;    // [B, S_kv, H_kv, D_v]
  const float* grad_out = nullptr;  // dO [B, S_q, H_out, D_v]
  const float* out = nullptr;       // O [B, S_q, H_out, D_v], before rounding to the dtype
  const float* lse = nullptr;       // [B, H_out, S_q]
};

// Where it writes, rounded to the dtype.
struct BackwardResults {
  float* dq = nullptr;  // [B, S_q, H_q, D_qk]
  float* dk = nullptr;  // [B, S_kv, H_kv, D_qk]
  float* dv = nullptr;  // [B, S_kv, H_kv, D_v]
};

class CpuBackward {
 public:
  static constexpr int64_t kQueryBlock = 64;
  static constexpr int64_t kKeyBlock = 64;

  // problem normalized, valid, core scope; both must outlive this. Scratch for num_threads
  // threads and the D buffer are allocated here.
  // `exprs`: the problem's compiled expressions (CompileExpressions), required with a score_mod.
  CpuBackward(const Problem& problem, const ProblemShapes& shapes, int num_threads,
              std::shared_ptr<const ProblemExpressions> exprs = nullptr);

  // Returns early, its results partly written, once `stop` says so (polled per tile).
  void Run(ThreadPool& pool, const BackwardOperands& in, const BackwardResults& out,
           const StopCheck* stop = nullptr);

  // Bytes this object allocates for num_threads threads (for memory estimates).
  static uint64_t BytesFor(const ProblemShapes& shapes, int num_threads);

 private:
  struct Scratch {
    std::vector<float> q, dout, kt, k, vt, s, p, ds, dk, dv, dq, cos_sin;
    std::vector<float> chain, slope;  // one row: d(final score)/d(raw score), score_mod's slope
    std::vector<uint8_t> keep;
    std::unique_ptr<expr::Evaluator<float>> score_mod;  // this thread's, when there is one
  };
  // P and dS of rows [i0, i1) x keys [j0, j1) of (b, h), from sc.q, sc.dout, sc.kt, sc.vt
  // (loaded for those rows and keys); false when the tile keeps no pair.
  bool Tile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1, TileCoverage coverage,
            const BackwardOperands& in, Scratch& sc) const;
  void RowTerms(ThreadPool& pool, const BackwardOperands& in, const StopCheck* stop);
  void KeyBlock(int64_t b, int kv_head, int64_t j0, int64_t j1, const BackwardOperands& in,
                const BackwardResults& out, Scratch& sc, const StopCheck* stop) const;
  void QueryBlock(int64_t b, int query_head, int64_t i0, int64_t i1, const BackwardOperands& in,
                  const BackwardResults& out, Scratch& sc, const StopCheck* stop) const;
  void LoadQueries(int64_t b, int query_head, int64_t i0, int64_t i1, const BackwardOperands& in,
                   Scratch& sc) const;
  void LoadGradOut(int64_t b, int h, int64_t i0, int64_t i1, const BackwardOperands& in,
                   Scratch& sc) const;
  void LoadKeysValues(int64_t b, int kv_head, int64_t j0, int64_t j1, const BackwardOperands& in,
                      bool row_major_keys, Scratch& sc) const;

  const Problem& problem_;
  const ProblemShapes& shapes_;
  MaskEvaluator mask_;
  std::vector<float> slopes_;     // ALiBi per output head; empty when off
  std::vector<double> inv_freq_;  // RoPE; empty when off
  std::shared_ptr<const ProblemExpressions> exprs_;  // may be null without expressions
  float scale_;
  std::vector<std::vector<int>> heads_of_query_;
  std::vector<std::vector<int>> heads_of_kv_;
  std::vector<float> row_terms_;  // D [B, H_out, S_q]
  std::vector<Scratch> scratch_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_BACKWARD_H_
