// The CPU attention kernel: for each (batch, output head, query tile) a streaming (online)
// softmax over key blocks, in float32, with whole key blocks skipped when the mask hides them
// and the per-element mask test skipped when it keeps them all. Memory per thread is one query
// tile and one key block, never S_q x S_kv. Also the pre-passes that rotate (RoPE) and scale
// queries and rotate keys.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_ATTENTION_H_
#define ATTNBENCH_KERNELS_CPU_CPU_ATTENTION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_kv_source.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/expr/evaluate.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/stop_check.h"

namespace attnbench {

class CpuAttention {
 public:
  static constexpr int64_t kQueryTile = 64;
  static constexpr int64_t kKeyBlock = 64;

  // problem normalized and valid; `exprs` its compiled expressions (CompileExpressions), required
  // when it has a score_mod. Scratch for num_threads threads is allocated here.
  CpuAttention(const Problem& problem, const ProblemShapes& shapes, int num_threads,
               std::shared_ptr<const ProblemExpressions> exprs = nullptr);

  // queries [B, S_q, H_q, D_qk] as PrepareQueries leaves them (rotated, times scale); writes
  // out [B, S_q, H_out, D_v] rounded to the dtype. Rows with every key hidden get zeros.
  // Each of these returns early, its output partly written, once `stop` says so; it is polled per
  // key block, so a query tile against a very long sequence stops too.
  void Run(ThreadPool& pool, const float* queries, const KvSource& kv, float* out,
           const StopCheck* stop = nullptr);
  // The forward a backward pass starts from: O before rounding to the dtype (float32, [B, S_q,
  // H_out, D_v]) and the log-sum-exp of each row's scores, lse[(b * H_out + h) * S_q + i] =
  // m + log(l) (-inf for a row with every key hidden).
  void RunSavingLse(ThreadPool& pool, const float* queries, const KvSource& kv,
                    float* out_unrounded, float* lse, const StopCheck* stop = nullptr);

  // queries_out = RoPE(queries_in at position i') * scale.
  void PrepareQueries(ThreadPool& pool, const float* queries_in, float* queries_out,
                      const StopCheck* stop = nullptr) const;
  // keys_out = RoPE(keys_in at position j); only meaningful with RoPE on.
  void RotateKeys(ThreadPool& pool, const float* keys_in, float* keys_out,
                  const StopCheck* stop = nullptr) const;

  // Scratch bytes per thread (for memory estimates).
  static uint64_t ScratchBytes(const ProblemShapes& shapes);

 private:
  struct Scratch {
    std::vector<float> q, kt, v, s, m, l, acc;
    std::vector<uint8_t> keep, active;
    std::unique_ptr<expr::Evaluator<float>> score_mod;  // this thread's, when there is one
  };
  // Writes O rounded to the dtype into `out`, or unrounded into `out` and the log-sum-exp into
  // `lse` when lse is given.
  void RunTile(int64_t b, int h, int64_t i0, int64_t i1, const float* queries, const KvSource& kv,
               float* out, float* lse, Scratch& scratch, const StopCheck* stop) const;
  void RunAll(ThreadPool& pool, const float* queries, const KvSource& kv, float* out, float* lse,
              const StopCheck* stop);

  const Problem& problem_;
  const ProblemShapes& shapes_;
  MaskEvaluator mask_;
  std::vector<float> slopes_;     // ALiBi per output head; empty when off
  std::vector<double> inv_freq_;  // RoPE; empty when off
  std::shared_ptr<const ProblemExpressions> exprs_;  // may be null without expressions
  float scale_;
  std::vector<Scratch> scratch_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_ATTENTION_H_
