#include "kernels/cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"

namespace attnbench {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
// Rows of the pre-passes per work item: enough to amortize the hand-out.
constexpr int64_t kRowsPerItem = 16;

}  // namespace

CpuAttention::CpuAttention(const Problem& problem, const ProblemShapes& shapes, int num_threads,
                           std::shared_ptr<const ProblemExpressions> exprs)
    : problem_(problem),
      shapes_(shapes),
      mask_(problem),
      scale_(static_cast<float>(
          problem.scale.value_or(1.0 / std::sqrt(static_cast<double>(problem.head_dim_qk))))) {
  if (problem.alibi.enabled) {
    for (double s : AlibiSlopes(problem.alibi, shapes.heads.num_output_heads)) {
      slopes_.push_back(static_cast<float>(s));
    }
  }
  if (problem.rope.enabled) {
    inv_freq_ = RopeInverseFrequencies(problem.rope.theta.value_or(10000.0),
                                       problem.rope.rotary_dims.value_or(problem.head_dim_qk));
  }
  exprs_ = std::move(exprs);
  scratch_.resize(std::max(1, num_threads));
  const int64_t tq = kQueryTile, tk = kKeyBlock;
  for (Scratch& s : scratch_) {
    s.q.resize(tq * shapes.dim_qk);
    s.kt.resize(shapes.dim_qk * tk);
    s.v.resize(tk * shapes.dim_v);
    s.s.resize(tq * tk);
    s.keep.resize(tq * tk);
    s.m.resize(tq);
    s.l.resize(tq);
    s.active.resize(tq);
    s.acc.resize(tq * shapes.dim_v);
    if (exprs_ != nullptr && exprs_->score_mod.has_value()) {
      s.score_mod = std::make_unique<expr::Evaluator<float>>(*exprs_->score_mod, exprs_->aux);
    }
  }
}

uint64_t CpuAttention::ScratchBytes(const ProblemShapes& shapes) {
  const uint64_t tq = kQueryTile, tk = kKeyBlock;
  return 4 * (tq * shapes.dim_qk + shapes.dim_qk * tk + tk * shapes.dim_v + tq * tk + 2 * tq +
              tq * shapes.dim_v) +
         tq * tk + tq;
}

void CpuAttention::PrepareQueries(ThreadPool& pool, const float* queries_in, float* queries_out,
                                  const StopCheck* stop) const {
  const int64_t rows = shapes_.batch * shapes_.seq_q;
  const int64_t heads = shapes_.heads.num_query_heads;
  const int64_t dim = shapes_.dim_qk;
  const int half = static_cast<int>(inv_freq_.size());
  pool.ParallelFor((rows + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item, int) {
    if (ShouldStop(stop)) return;
    std::vector<float> cos_sin(2 * half);
    for (int64_t row = item * kRowsPerItem; row < std::min(rows, (item + 1) * kRowsPerItem);
         ++row) {
      if (half > 0) RopeCosSin(row % shapes_.seq_q + mask_.offset(), inv_freq_, cos_sin.data());
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = queries_in + (row * heads + h) * dim;
        float* dst = queries_out + (row * heads + h) * dim;
        std::copy(src, src + dim, dst);
        if (half > 0) ApplyRope(dst, cos_sin.data(), half);
        for (int64_t d = 0; d < dim; ++d) dst[d] *= scale_;
      }
    }
  });
}

void CpuAttention::RotateKeys(ThreadPool& pool, const float* keys_in, float* keys_out,
                              const StopCheck* stop) const {
  const int64_t rows = shapes_.batch * shapes_.seq_kv;
  pool.ParallelFor((rows + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item, int) {
    if (ShouldStop(stop)) return;
    RotateKeyRows(inv_freq_, shapes_.seq_kv, shapes_.heads.num_kv_heads, shapes_.dim_qk,
                  item * kRowsPerItem, std::min(rows, (item + 1) * kRowsPerItem), keys_in,
                  keys_out);
  });
}

void CpuAttention::Run(ThreadPool& pool, const float* queries, const KvSource& kv, float* out,
                       const StopCheck* stop) {
  RunAll(pool, queries, kv, out, nullptr, stop);
}

void CpuAttention::RunSavingLse(ThreadPool& pool, const float* queries, const KvSource& kv,
                                float* out_unrounded, float* lse, const StopCheck* stop) {
  RunAll(pool, queries, kv, out_unrounded, lse, stop);
}

void CpuAttention::RunAll(ThreadPool& pool, const float* queries, const KvSource& kv, float* out,
                          float* lse, const StopCheck* stop) {
  const int64_t tiles = (shapes_.seq_q + kQueryTile - 1) / kQueryTile;
  const int64_t heads = shapes_.heads.num_output_heads;
  pool.ParallelFor(shapes_.batch * heads * tiles, [&](int64_t item, int thread) {
    if (ShouldStop(stop)) return;
    const int64_t t = item % tiles;
    const int h = static_cast<int>((item / tiles) % heads);
    const int64_t b = item / tiles / heads;
    const int64_t i0 = t * kQueryTile;
    RunTile(b, h, i0, std::min(shapes_.seq_q, i0 + kQueryTile), queries, kv, out, lse,
            scratch_[thread], stop);
  });
}

void CpuAttention::RunTile(int64_t b, int h, int64_t i0, int64_t i1, const float* queries,
                           const KvSource& kv, float* out, float* lse, Scratch& sc,
                           const StopCheck* stop) const {
  const int64_t rows = i1 - i0;
  const int64_t dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const int64_t hq = shapes_.heads.num_query_heads, hout = shapes_.heads.num_output_heads;
  const HeadPair pair = shapes_.heads.map[h];
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = queries + (((b * shapes_.seq_q) + i0 + r) * hq + pair.query_head) * dqk;
    std::copy(src, src + dqk, &sc.q[r * dqk]);
  }
  std::fill(sc.m.begin(), sc.m.begin() + rows, kMinusInf);
  std::fill(sc.l.begin(), sc.l.begin() + rows, 0.0f);
  std::fill(sc.acc.begin(), sc.acc.begin() + rows * dv, 0.0f);
  const bool softcap = problem_.softcap.enabled;
  const float cap = static_cast<float>(problem_.softcap.cap);
  const float slope = slopes_.empty() ? 0.0f : slopes_[h];
  expr::Bindings bind;
  bind.b = b;
  bind.h = h;
  bind.hq = pair.query_head;
  bind.hkv = pair.kv_head;

  for (int64_t j0 = 0; j0 < shapes_.seq_kv; j0 += kKeyBlock) {
    // A clock read per block of 64 x 64 scores: well under 1% of the block's work.
    if (ShouldStop(stop)) return;
    const int64_t j1 = std::min(shapes_.seq_kv, j0 + kKeyBlock);
    const int64_t width = j1 - j0;
    const TileCoverage coverage = mask_.Coverage(b, h, i0, i1, j0, j1);
    if (coverage == TileCoverage::kNone) continue;
    if (coverage == TileCoverage::kPartial) mask_.FillTile(b, h, i0, i1, j0, j1, sc.keep.data());
    kv.LoadKeys(b, pair.kv_head, j0, j1, sc.kt.data(), kKeyBlock);
    bool any_active = false;
    for (int64_t r = 0; r < rows; ++r) {
      float* s = &sc.s[r * kKeyBlock];
      std::fill(s, s + width, 0.0f);
      const float* q = &sc.q[r * dqk];
      for (int64_t d = 0; d < dqk; ++d) {
        const float qd = q[d];
        const float* k = &sc.kt[d * kKeyBlock];
        for (int64_t c = 0; c < width; ++c) s[c] += qd * k[c];
      }
      if (!slopes_.empty()) {
        const int64_t pos = i0 + r + mask_.offset();
        for (int64_t c = 0; c < width; ++c) {
          s[c] +=
              static_cast<float>(static_cast<double>(slope) * static_cast<double>(j0 + c - pos));
        }
      }
      if (softcap) {
        for (int64_t c = 0; c < width; ++c) s[c] = cap * std::tanh(s[c] / cap);
      }
      if (sc.score_mod != nullptr) {
        bind.q = i0 + r + mask_.offset();
        sc.score_mod->Scores(bind, j0, width, s);
      }
      if (coverage == TileCoverage::kPartial) {
        const uint8_t* keep = &sc.keep[r * width];
        for (int64_t c = 0; c < width; ++c) {
          if (!keep[c]) s[c] = kMinusInf;
        }
      }
      float block_max = kMinusInf;
      for (int64_t c = 0; c < width; ++c) block_max = std::max(block_max, s[c]);
      sc.active[r] = block_max != kMinusInf;
      if (!sc.active[r]) continue;
      any_active = true;
      // Online softmax: rescale what was accumulated under the old running maximum.
      const float m_new = std::max(sc.m[r], block_max);
      const float alpha = std::exp(sc.m[r] - m_new);
      float sum = 0;
      for (int64_t c = 0; c < width; ++c) {
        const float p = std::exp(s[c] - m_new);
        s[c] = p;
        sum += p;
      }
      sc.l[r] = sc.l[r] * alpha + sum;
      sc.m[r] = m_new;
      if (alpha != 1.0f) {
        float* acc = &sc.acc[r * dv];
        for (int64_t d = 0; d < dv; ++d) acc[d] *= alpha;
      }
    }
    if (!any_active) continue;
    kv.LoadValues(b, pair.kv_head, j0, j1, sc.v.data());
    for (int64_t r = 0; r < rows; ++r) {
      if (!sc.active[r]) continue;
      float* acc = &sc.acc[r * dv];
      const float* p = &sc.s[r * kKeyBlock];
      for (int64_t c = 0; c < width; ++c) {
        const float pc = p[c];
        if (pc == 0.0f) continue;
        const float* v = &sc.v[c * dv];
        for (int64_t d = 0; d < dv; ++d) acc[d] += pc * v[d];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = out + (((b * shapes_.seq_q) + i0 + r) * hout + h) * dv;
    const float inv = sc.l[r] > 0 ? 1.0f / sc.l[r] : 0.0f;
    if (lse != nullptr) {
      // A backward pass recomputes P = exp(s - lse) from it; rows without keys never use it.
      lse[(b * hout + h) * shapes_.seq_q + i0 + r] =
          sc.l[r] > 0 ? sc.m[r] + std::log(sc.l[r]) : kMinusInf;
      for (int64_t d = 0; d < dv; ++d) dst[d] = sc.acc[r * dv + d] * inv;
      continue;
    }
    for (int64_t d = 0; d < dv; ++d)
      dst[d] = RoundToDType(sc.acc[r * dv + d] * inv, problem_.output_dtype);
  }
}

}  // namespace attnbench
