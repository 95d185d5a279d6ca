#include "kernels/cpu/cpu_backward.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"

namespace attnbench {
namespace {

// Rows of the D pass per work item: enough to amortize the hand-out.
constexpr int64_t kRowsPerItem = 64;

}  // namespace

CpuBackward::CpuBackward(const Problem& problem, const ProblemShapes& shapes, int num_threads,
                         std::shared_ptr<const ProblemExpressions> exprs)
    : problem_(problem),
      shapes_(shapes),
      mask_(problem),
      exprs_(std::move(exprs)),
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
  heads_of_query_.resize(shapes.heads.num_query_heads);
  heads_of_kv_.resize(shapes.heads.num_kv_heads);
  for (int h = 0; h < shapes.heads.num_output_heads; ++h) {
    heads_of_query_[shapes.heads.map[h].query_head].push_back(h);
    heads_of_kv_[shapes.heads.map[h].kv_head].push_back(h);
  }
  row_terms_.resize(shapes.batch * shapes.heads.num_output_heads * shapes.seq_q);
  scratch_.resize(std::max(1, num_threads));
  const int64_t tq = kQueryBlock, tk = kKeyBlock, dqk = shapes.dim_qk, dv = shapes.dim_v;
  for (Scratch& s : scratch_) {
    s.q.resize(tq * dqk);
    s.dout.resize(tq * dv);
    s.kt.resize(dqk * tk);
    s.k.resize(tk * dqk);
    s.vt.resize(dv * tk);
    s.s.resize(tq * tk);
    s.p.resize(tq * tk);
    s.ds.resize(tq * tk);
    s.keep.resize(tq * tk);
    s.dk.resize(tk * dqk);
    s.dv.resize(tk * dv);
    s.dq.resize(tq * dqk);
    s.cos_sin.resize(inv_freq_.size() * 2);
    s.chain.resize(tk);
    s.slope.resize(tk);
    if (exprs_ != nullptr && exprs_->score_mod.has_value()) {
      s.score_mod = std::make_unique<expr::Evaluator<float>>(*exprs_->score_mod, exprs_->aux);
    }
  }
}

uint64_t CpuBackward::BytesFor(const ProblemShapes& shapes, int num_threads) {
  const uint64_t tq = kQueryBlock, tk = kKeyBlock, dqk = shapes.dim_qk, dv = shapes.dim_v;
  const uint64_t per_thread = 4 * (tq * dqk + tq * dv + dqk * tk + tk * dqk + dv * tk +
                                   3 * tq * tk + tk * dqk + tk * dv + tq * dqk + dqk) +
                              tq * tk;
  const uint64_t rows = static_cast<uint64_t>(shapes.batch) * shapes.heads.num_output_heads *
                        static_cast<uint64_t>(shapes.seq_q);
  return 4 * rows + per_thread * static_cast<uint64_t>(std::max(1, num_threads));
}

void CpuBackward::Run(ThreadPool& pool, const BackwardOperands& in, const BackwardResults& out,
                      const StopCheck* stop) {
  RowTerms(pool, in, stop);
  const int64_t key_blocks = (shapes_.seq_kv + kKeyBlock - 1) / kKeyBlock;
  const int64_t hkv = shapes_.heads.num_kv_heads;
  pool.ParallelFor(shapes_.batch * hkv * key_blocks, [&](int64_t item, int thread) {
    if (ShouldStop(stop)) return;
    const int64_t jb = item % key_blocks;
    const int kh = static_cast<int>((item / key_blocks) % hkv);
    const int64_t b = item / key_blocks / hkv;
    const int64_t j0 = jb * kKeyBlock;
    KeyBlock(b, kh, j0, std::min(shapes_.seq_kv, j0 + kKeyBlock), in, out, scratch_[thread], stop);
  });
  const int64_t query_blocks = (shapes_.seq_q + kQueryBlock - 1) / kQueryBlock;
  const int64_t hq = shapes_.heads.num_query_heads;
  pool.ParallelFor(shapes_.batch * hq * query_blocks, [&](int64_t item, int thread) {
    if (ShouldStop(stop)) return;
    const int64_t ib = item % query_blocks;
    const int qh = static_cast<int>((item / query_blocks) % hq);
    const int64_t b = item / query_blocks / hq;
    const int64_t i0 = ib * kQueryBlock;
    QueryBlock(b, qh, i0, std::min(shapes_.seq_q, i0 + kQueryBlock), in, out, scratch_[thread],
               stop);
  });
}

void CpuBackward::RowTerms(ThreadPool& pool, const BackwardOperands& in, const StopCheck* stop) {
  const int64_t rows = shapes_.batch * shapes_.seq_q;  // (b, i); every head of a row together
  const int64_t hout = shapes_.heads.num_output_heads, dv = shapes_.dim_v;
  pool.ParallelFor((rows + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item, int) {
    if (ShouldStop(stop)) return;
    for (int64_t row = item * kRowsPerItem; row < std::min(rows, (item + 1) * kRowsPerItem);
         ++row) {
      const int64_t b = row / shapes_.seq_q, i = row % shapes_.seq_q;
      for (int64_t h = 0; h < hout; ++h) {
        const float* o = in.out + (row * hout + h) * dv;
        const float* g = in.grad_out + (row * hout + h) * dv;
        float d = 0;
        for (int64_t e = 0; e < dv; ++e) d += o[e] * g[e];
        row_terms_[(b * hout + h) * shapes_.seq_q + i] = d;
      }
    }
  });
}

void CpuBackward::LoadQueries(int64_t b, int query_head, int64_t i0, int64_t i1,
                              const BackwardOperands& in, Scratch& sc) const {
  const int64_t dqk = shapes_.dim_qk, hq = shapes_.heads.num_query_heads;
  for (int64_t i = i0; i < i1; ++i) {
    const float* src = in.queries + ((b * shapes_.seq_q + i) * hq + query_head) * dqk;
    std::copy(src, src + dqk, &sc.q[(i - i0) * dqk]);
  }
}

void CpuBackward::LoadGradOut(int64_t b, int h, int64_t i0, int64_t i1, const BackwardOperands& in,
                              Scratch& sc) const {
  const int64_t dv = shapes_.dim_v, hout = shapes_.heads.num_output_heads;
  for (int64_t i = i0; i < i1; ++i) {
    const float* src = in.grad_out + ((b * shapes_.seq_q + i) * hout + h) * dv;
    std::copy(src, src + dv, &sc.dout[(i - i0) * dv]);
  }
}

void CpuBackward::LoadKeysValues(int64_t b, int kv_head, int64_t j0, int64_t j1,
                                 const BackwardOperands& in, bool row_major_keys,
                                 Scratch& sc) const {
  const int64_t dqk = shapes_.dim_qk, dv = shapes_.dim_v, hkv = shapes_.heads.num_kv_heads;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t row = (b * shapes_.seq_kv + j) * hkv + kv_head;
    const float* k = in.keys + row * dqk;
    const float* v = in.values + row * dv;
    for (int64_t d = 0; d < dqk; ++d) sc.kt[d * kKeyBlock + (j - j0)] = k[d];
    for (int64_t d = 0; d < dv; ++d) sc.vt[d * kKeyBlock + (j - j0)] = v[d];
    if (row_major_keys) std::copy(k, k + dqk, &sc.k[(j - j0) * dqk]);
  }
}

bool CpuBackward::Tile(int64_t b, int h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                       TileCoverage coverage, const BackwardOperands& in, Scratch& sc) const {
  const int64_t rows = i1 - i0, width = j1 - j0;
  const int64_t dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const int64_t hout = shapes_.heads.num_output_heads;
  const bool softcap = problem_.softcap.enabled;
  const float cap = static_cast<float>(problem_.softcap.cap);
  const float slope = slopes_.empty() ? 0.0f : slopes_[h];
  if (coverage == TileCoverage::kPartial) mask_.FillTile(b, h, i0, i1, j0, j1, sc.keep.data());
  bool any = false;
  for (int64_t r = 0; r < rows; ++r) {
    // The scores exactly as the forward computed them (same operands, same order of sums), so
    // P = exp(s - lse) is the forward's normalized P.
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
        s[c] += static_cast<float>(static_cast<double>(slope) * static_cast<double>(j0 + c - pos));
      }
    }
    // chain[c] = d(final score) / d(score before softcap), for dS below.
    float* chain = sc.chain.data();
    std::fill(chain, chain + width, 1.0f);
    if (softcap) {
      for (int64_t c = 0; c < width; ++c) {
        s[c] = cap * std::tanh(s[c] / cap);
        chain[c] = SoftcapDerivative(s[c], cap);
      }
    }
    if (sc.score_mod != nullptr) {
      expr::Bindings bind;
      bind.b = b;
      bind.h = h;
      bind.q = i0 + r + mask_.offset();
      bind.hq = shapes_.heads.map[h].query_head;
      bind.hkv = shapes_.heads.map[h].kv_head;
      sc.score_mod->ScoresAndSlopes(bind, j0, width, s, sc.slope.data());
      for (int64_t c = 0; c < width; ++c) chain[c] *= sc.slope[c];
    }
    const float lse = in.lse[(b * hout + h) * shapes_.seq_q + i0 + r];
    const float d_row = row_terms_[(b * hout + h) * shapes_.seq_q + i0 + r];
    float* p = &sc.p[r * kKeyBlock];
    const uint8_t* keep = &sc.keep[r * width];
    for (int64_t c = 0; c < width; ++c) {
      // A hidden pair (and every pair of a row without keys, whose lse is -inf) has P = 0.
      const bool kept = coverage == TileCoverage::kAll || keep[c];
      p[c] = kept ? std::exp(s[c] - lse) : 0.0f;
      any = any || kept;
    }
    // dP = dO V^T, then dS = P (dP - D), through the derivatives of softcap and score_mod.
    float* ds = &sc.ds[r * kKeyBlock];
    std::fill(ds, ds + width, 0.0f);
    const float* g = &sc.dout[r * dv];
    for (int64_t e = 0; e < dv; ++e) {
      const float ge = g[e];
      const float* v = &sc.vt[e * kKeyBlock];
      for (int64_t c = 0; c < width; ++c) ds[c] += ge * v[c];
    }
    for (int64_t c = 0; c < width; ++c) {
      ds[c] = p[c] * (ds[c] - d_row);
      // A hidden pair has p = 0: keep a score_mod's infinite or NaN slope there out of dS.
      if (p[c] != 0.0f) ds[c] *= chain[c];
    }
  }
  return any;
}

void CpuBackward::KeyBlock(int64_t b, int kv_head, int64_t j0, int64_t j1,
                           const BackwardOperands& in, const BackwardResults& out, Scratch& sc,
                           const StopCheck* stop) const {
  const int64_t width = j1 - j0, dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  LoadKeysValues(b, kv_head, j0, j1, in, /*row_major_keys=*/false, sc);
  std::fill(sc.dk.begin(), sc.dk.begin() + width * dqk, 0.0f);
  std::fill(sc.dv.begin(), sc.dv.begin() + width * dv, 0.0f);
  for (int h : heads_of_kv_[kv_head]) {
    const int qh = shapes_.heads.map[h].query_head;
    for (int64_t i0 = 0; i0 < shapes_.seq_q; i0 += kQueryBlock) {
      // A clock read per tile of 64 x 64 pairs: well under 1% of the tile's work.
      if (ShouldStop(stop)) return;
      const int64_t i1 = std::min(shapes_.seq_q, i0 + kQueryBlock);
      const TileCoverage coverage = mask_.Coverage(b, h, i0, i1, j0, j1);
      if (coverage == TileCoverage::kNone) continue;
      LoadQueries(b, qh, i0, i1, in, sc);
      LoadGradOut(b, h, i0, i1, in, sc);
      if (!Tile(b, h, i0, i1, j0, j1, coverage, in, sc)) continue;
      for (int64_t r = 0; r < i1 - i0; ++r) {
        const float* p = &sc.p[r * kKeyBlock];
        const float* ds = &sc.ds[r * kKeyBlock];
        const float* g = &sc.dout[r * dv];
        const float* q = &sc.q[r * dqk];
        for (int64_t c = 0; c < width; ++c) {
          if (p[c] == 0.0f) continue;  // hidden, or too small to matter in float32
          float* dvc = &sc.dv[c * dv];
          for (int64_t e = 0; e < dv; ++e) dvc[e] += p[c] * g[e];
          float* dkc = &sc.dk[c * dqk];
          for (int64_t e = 0; e < dqk; ++e) dkc[e] += ds[c] * q[e];
        }
      }
    }
  }
  const int64_t hkv = shapes_.heads.num_kv_heads;
  const int half = static_cast<int>(inv_freq_.size());
  for (int64_t c = 0; c < width; ++c) {
    const int64_t row = (b * shapes_.seq_kv + j0 + c) * hkv + kv_head;
    float* dk = &sc.dk[c * dqk];
    if (half > 0) {
      RopeCosSin(j0 + c, inv_freq_, sc.cos_sin.data());
      ApplyRopeTranspose(dk, sc.cos_sin.data(), half);
    }
    for (int64_t e = 0; e < dqk; ++e) out.dk[row * dqk + e] = RoundToDType(dk[e], problem_.dtype);
    for (int64_t e = 0; e < dv; ++e) {
      out.dv[row * dv + e] = RoundToDType(sc.dv[c * dv + e], problem_.dtype);
    }
  }
}

void CpuBackward::QueryBlock(int64_t b, int query_head, int64_t i0, int64_t i1,
                             const BackwardOperands& in, const BackwardResults& out, Scratch& sc,
                             const StopCheck* stop) const {
  const int64_t rows = i1 - i0, dqk = shapes_.dim_qk;
  LoadQueries(b, query_head, i0, i1, in, sc);
  std::fill(sc.dq.begin(), sc.dq.begin() + rows * dqk, 0.0f);
  for (int h : heads_of_query_[query_head]) {
    const int kh = shapes_.heads.map[h].kv_head;
    LoadGradOut(b, h, i0, i1, in, sc);
    for (int64_t j0 = 0; j0 < shapes_.seq_kv; j0 += kKeyBlock) {
      if (ShouldStop(stop)) return;
      const int64_t j1 = std::min(shapes_.seq_kv, j0 + kKeyBlock);
      const TileCoverage coverage = mask_.Coverage(b, h, i0, i1, j0, j1);
      if (coverage == TileCoverage::kNone) continue;
      LoadKeysValues(b, kh, j0, j1, in, /*row_major_keys=*/true, sc);
      if (!Tile(b, h, i0, i1, j0, j1, coverage, in, sc)) continue;
      for (int64_t r = 0; r < rows; ++r) {
        const float* ds = &sc.ds[r * kKeyBlock];
        float* dq = &sc.dq[r * dqk];
        for (int64_t c = 0; c < j1 - j0; ++c) {
          if (ds[c] == 0.0f) continue;
          const float* k = &sc.k[c * dqk];
          for (int64_t e = 0; e < dqk; ++e) dq[e] += ds[c] * k[e];
        }
      }
    }
  }
  const int64_t hq = shapes_.heads.num_query_heads;
  const int half = static_cast<int>(inv_freq_.size());
  for (int64_t r = 0; r < rows; ++r) {
    float* dq = &sc.dq[r * dqk];
    for (int64_t e = 0; e < dqk; ++e) dq[e] *= scale_;
    if (half > 0) {
      RopeCosSin(i0 + r + mask_.offset(), inv_freq_, sc.cos_sin.data());
      ApplyRopeTranspose(dq, sc.cos_sin.data(), half);
    }
    float* dst = out.dq + ((b * shapes_.seq_q + i0 + r) * hq + query_head) * dqk;
    for (int64_t e = 0; e < dqk; ++e) dst[e] = RoundToDType(dq[e], problem_.dtype);
  }
}

}  // namespace attnbench
